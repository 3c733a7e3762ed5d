// Duress security console: the floor-plan admin pages (/admin/floorplans). Served from
// /static (the CSP forbids inline script).
//
// - Upload: the chosen file is sent as it is (POST /api/admin/floorplans?building=…&floor=…,
//   the CSRF token in X-CSRF-Token), not as a multipart form, so the receiver can refuse it by
//   size before reading it and never buffers a form. A refusal's problem+json `detail` is shown
//   in the form's alert line.
// - Placing a room: a click on the plan sets the room's position as fractions of the image's
//   width and height (the SVG's own coordinates, so zoom and layout do not matter) and shows a
//   marker there; the numbers can also be typed.
'use strict';
(() => {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || '';

  async function problemText(r) {
    const type = r.headers.get('content-type') || '';
    if (type.startsWith('application/problem+json') || type.startsWith('application/json')) {
      try {
        const p = await r.json();
        if (p && p.detail) return p.detail;
      } catch (_) { /* fall through */ }
    }
    if (r.status === 401) return 'Your session has ended: sign in again, then upload.';
    if (r.status === 403) return 'Refused: only console administrators can upload floor plans (or the page expired: reload it).';
    return `The upload was refused (HTTP ${r.status}).`;
  }

  document.querySelectorAll('form.floor-plan-upload').forEach((form) => {
    const error = form.querySelector('.floor-plan-upload-error');
    const status = form.querySelector('.floor-plan-upload-status');
    const button = form.querySelector('button[type="submit"]');
    function fail(text) {
      error.textContent = text;
      error.hidden = false;
      status.textContent = '';
      button.disabled = false;
    }
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      error.hidden = true;
      const file = form.elements.file.files[0];
      if (!file) return fail('Choose the floor plan\'s image file.');
      const query = new URLSearchParams({
        building: form.elements.building.value,
        floor: form.elements.floor.value,
      });
      button.disabled = true;
      status.textContent = 'Uploading and checking…';
      let r;
      try {
        r = await fetch(`/api/admin/floorplans?${query}`, {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/octet-stream' },
          body: file,
        });
      } catch (_) {
        return fail('The console server cannot be reached: nothing was uploaded. Try again.');
      }
      if (r.status === 201) {
        const done = await r.json();
        window.location.assign(done.url);
        return;
      }
      fail(await problemText(r));
    });
  });

  const canvas = document.getElementById('fp-canvas');
  const placeForm = document.getElementById('fp-place');
  if (canvas && placeForm) {
    const width = Number(canvas.dataset.width);
    const height = Number(canvas.dataset.height);
    const pending = document.getElementById('fp-pending');
    const x = placeForm.elements.x;
    const y = placeForm.elements.y;
    function show() {
      const fx = Number(x.value);
      const fy = Number(y.value);
      if (x.value === '' || y.value === '' || !(fx >= 0 && fx <= 1 && fy >= 0 && fy <= 1)) {
        pending.setAttribute('visibility', 'hidden');
        return;
      }
      pending.setAttribute('cx', String(fx * width));
      pending.setAttribute('cy', String(fy * height));
      pending.setAttribute('visibility', 'visible');
    }
    canvas.addEventListener('click', (e) => {
      const matrix = canvas.getScreenCTM();
      if (!matrix) return;
      const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(matrix.inverse());
      const clamp = (v) => Math.min(1, Math.max(0, v));
      x.value = clamp(p.x / width).toFixed(4);
      y.value = clamp(p.y / height).toFixed(4);
      show();
      placeForm.elements.room.focus();
    });
    x.addEventListener('input', show);
    y.addEventListener('input', show);
  }
})();
