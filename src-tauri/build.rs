//! Tauri's build step, with the app's commands declared so each gets an `allow-<command>`
//! permission and each window's capability (`capabilities/*.json`) grants only its own.
fn main() {
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(
        tauri_build::AppManifest::new().commands(&[
            "status_info",
            "help_info",
            "location_info",
            "set_location",
            "close_window",
            "hotspot_trigger",
            "cancel_info",
            "cancel_submit",
        ]),
    ))
    .expect("tauri-build failed");
}
