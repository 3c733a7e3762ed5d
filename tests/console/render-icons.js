#!/usr/bin/env node
// Renders the console's web-app icons (docs/console.md, "Phones on patrol") from the one
// source drawing, crates/duress-receiver/src/console/static/favicon.svg, with Debian's
// Chromium through playwright-core (the same browser and package the console tests use), so
// the PNGs can be regenerated whenever the drawing changes:
//
//   (cd tests/console && npm ci) && node tests/console/render-icons.js
//
// Environment: CHROMIUM (default /usr/bin/chromium). The PNGs are committed; the receiver
// embeds them like its other static files (src/console/static_files.rs).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const STATIC = path.resolve(__dirname, '..', '..', 'crates', 'duress-receiver', 'src', 'console', 'static');
const NAVY = '#14202e'; // the console's header colour (--navy in console.css), the theme colour

// `scale`: the drawing's share of the square. A maskable icon keeps it inside the central
// 80 % circle that every launcher's mask leaves visible (W3C manifest "safe zone"), so 0.6.
// The Apple touch icon is opaque (iOS fills transparency with black and rounds the corners).
const ICONS = [
  { file: 'icon-192.png', size: 192, scale: 1, background: null },
  { file: 'icon-512.png', size: 512, scale: 1, background: null },
  { file: 'icon-maskable-512.png', size: 512, scale: 0.6, background: NAVY },
  { file: 'apple-touch-icon.png', size: 180, scale: 0.8, background: NAVY },
];

async function main() {
  const svg = fs.readFileSync(path.join(STATIC, 'favicon.svg'));
  const src = 'data:image/svg+xml;base64,' + svg.toString('base64');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu'],
  });
  try {
    for (const icon of ICONS) {
      const context = await browser.newContext({ viewport: { width: icon.size, height: icon.size }, deviceScaleFactor: 1 });
      const page = await context.newPage();
      const side = Math.round(icon.size * icon.scale);
      await page.setContent(`<!doctype html><html><body style="margin:0;width:${icon.size}px;height:${icon.size}px;display:flex;align-items:center;justify-content:center;background:${icon.background || 'transparent'}"><img src="${src}" width="${side}" height="${side}" alt=""></body></html>`);
      await page.locator('img').evaluate((img) => img.decode());
      await page.screenshot({ path: path.join(STATIC, icon.file), omitBackground: !icon.background });
      await context.close();
      console.log(`${icon.file}: ${icon.size}×${icon.size}`);
    }
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
