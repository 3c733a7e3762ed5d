//! Checking an uploaded floor-plan image, and re-encoding it (issue 17, item 4).
//!
//! An upload is untrusted bytes from a browser. In order, cheapest first:
//! 1. its size: at most [`MAX_UPLOAD_BYTES`] (the route stops reading the body there);
//! 2. its type, by content, never by the name or the declared `Content-Type`: PNG, JPEG or
//!    WebP. SVG (it can carry script) and any other markup, GIF, PDF and everything else are
//!    refused by name;
//! 3. its dimensions, from the image header alone, BEFORE any pixel is decoded: at most
//!    [`MAX_SIDE`] px each way, so a small file claiming 100 000 × 100 000 px (a
//!    decompression bomb) costs a header read;
//! 4. a decode under [`image::Limits`] (the same dimensions, and a cap on memory);
//! 5. a fresh PNG encoding of the pixels alone: no chunk, comment, colour profile or EXIF
//!    block of the upload (a phone photo's GPS position) survives. A JPEG's EXIF orientation
//!    is applied first, so the plan shows the way up it was taken.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder as _, ImageFormat, ImageReader, Limits};

/// The largest upload read (10 MiB).
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;
/// The largest width and height accepted, in pixels.
pub const MAX_SIDE: u32 = 8000;
/// The decoder's memory cap: an 8000 × 8000 RGBA image at 8 bits (256 MB) with room for the
/// decoder's own buffers. 16-bit images that large are refused by it (they are not plans).
const MAX_DECODE_ALLOC: u64 = 320 * 1024 * 1024;

/// An accepted plan: the receiver's own PNG and its size.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckedPlan {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Debug for CheckedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedPlan")
            .field("png_bytes", &self.png.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// Why an upload was refused; `Display` is the message the admin reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanRefusal {
    #[error("The file is empty: choose the floor plan's image file.")]
    Empty,
    #[error("The file is larger than {} MB: a floor plan may be at most {} MB. Export it smaller (PNG, JPEG or WebP).", MAX_UPLOAD_BYTES / (1024 * 1024), MAX_UPLOAD_BYTES / (1024 * 1024))]
    TooLarge,
    #[error(
        "SVG and other markup files are not accepted (an SVG can carry script): export the plan as a PNG, JPEG or WebP image."
    )]
    Markup,
    #[error(
        "This file is {0}, not a PNG, JPEG or WebP image: export the plan as PNG, JPEG or WebP."
    )]
    WrongType(String),
    #[error(
        "The image is {width} × {height} px: a floor plan may be at most {MAX_SIDE} × {MAX_SIDE} px."
    )]
    TooManyPixels { width: u32, height: u32 },
    #[error("The image could not be read ({0}): it is damaged or not what its header says.")]
    Unreadable(String),
}

impl PlanRefusal {
    /// A stable short code for problem+json `type`s and tests.
    pub fn code(&self) -> &'static str {
        match self {
            PlanRefusal::Empty => "empty",
            PlanRefusal::TooLarge => "too-large",
            PlanRefusal::Markup => "markup",
            PlanRefusal::WrongType(_) => "wrong-type",
            PlanRefusal::TooManyPixels { .. } => "dimensions",
            PlanRefusal::Unreadable(_) => "unreadable",
        }
    }
}

/// What the bytes look like, for the refusal message (never trusted to accept anything).
fn describe_other(bytes: &[u8]) -> String {
    if bytes.starts_with(b"%PDF-") {
        return "a PDF document".to_owned();
    }
    match image::guess_format(bytes) {
        Ok(ImageFormat::Gif) => "a GIF image".to_owned(),
        Ok(other) => match other.extensions_str().first() {
            Some(ext) => format!("a {} image", ext.to_uppercase()),
            None => "an image of another kind".to_owned(),
        },
        Err(_) if std::str::from_utf8(bytes).is_ok() => "text".to_owned(),
        Err(_) => "of an unknown kind".to_owned(),
    }
}

/// Markup: after an optional UTF-8 byte order mark and white space, a `<` (SVG, HTML, XML).
fn looks_like_markup(bytes: &[u8]) -> bool {
    let rest = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    rest.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<')
}

/// The upload's format, if it is one we accept.
pub fn accepted_format(bytes: &[u8]) -> Result<ImageFormat, PlanRefusal> {
    if bytes.is_empty() {
        return Err(PlanRefusal::Empty);
    }
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(PlanRefusal::TooLarge);
    }
    if looks_like_markup(bytes) {
        return Err(PlanRefusal::Markup);
    }
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => Ok(f),
        _ => Err(PlanRefusal::WrongType(describe_other(bytes))),
    }
}

fn unreadable(e: image::ImageError) -> PlanRefusal {
    match e {
        image::ImageError::Limits(_) => PlanRefusal::Unreadable(
            "it needs more memory to decode than a floor plan may".to_owned(),
        ),
        other => PlanRefusal::Unreadable(other.to_string()),
    }
}

/// Checks an upload and re-encodes it as PNG (see the module's documentation). CPU-bound:
/// call it from a blocking task.
pub fn check_and_reencode(bytes: &[u8]) -> Result<CheckedPlan, PlanRefusal> {
    let format = accepted_format(bytes)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The header is read without limits so that the refusal can name the claimed size; the
    // limits are set (and checked again by the decoder) before any pixel is decoded.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PlanRefusal::Unreadable("it has no pixels".to_owned()));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(PlanRefusal::TooManyPixels { width, height });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    decoder.set_limits(limits).map_err(unreadable)?;
    let orientation = decoder.orientation().map_err(unreadable)?;
    let mut pixels = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    pixels.apply_orientation(orientation);
    // 8 bits per channel, alpha only when the upload had it: what a plan needs, no more.
    let pixels = if pixels.color().has_alpha() {
        DynamicImage::ImageRgba8(pixels.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(pixels.to_rgb8())
    };
    let mut png = Vec::new();
    pixels
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(unreadable)?;
    Ok(CheckedPlan {
        png,
        width: pixels.width(),
        height: pixels.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_other_types_are_named() {
        assert_eq!(
            accepted_format(b"\xEF\xBB\xBF  <svg><script>alert(1)</script></svg>"),
            Err(PlanRefusal::Markup)
        );
        assert_eq!(
            accepted_format(b"%PDF-1.7\n..."),
            Err(PlanRefusal::WrongType("a PDF document".to_owned()))
        );
        assert_eq!(
            accepted_format(b"GIF89a\x01\x00\x01\x00"),
            Err(PlanRefusal::WrongType("a GIF image".to_owned()))
        );
        assert_eq!(
            accepted_format(b"just some words"),
            Err(PlanRefusal::WrongType("text".to_owned()))
        );
        assert_eq!(accepted_format(b""), Err(PlanRefusal::Empty));
    }
}
