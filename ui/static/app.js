// tusou search page. Plain JavaScript, no build step, no third-party code:
// everything it loads comes from the gateway (see the CSP in ui/ui.go).
'use strict';

(() => {
  const $ = (sel) => document.querySelector(sel);
  const KEY_STORAGE = 'tusou.apiKey';
  const THUMB_SIZE = 256;
  const THUMB_PARALLEL = 6;
  const UPLOAD_PARALLEL = 3;
  const IMAGE_EXT = /\.(jpe?g|png|gif|webp)$/i;

  const el = {
    form: $('#search-form'), q: $('#q'), searchImage: $('#search-image'),
    k: $('#k'), minScore: $('#min-score'), options: $('#options'),
    filterRows: $('#filter-rows'), addFilter: $('#add-filter'), filterKeys: $('#filter-keys'),
    status: $('#status'), preview: $('#query-preview'), results: $('#results'),
    ingestFiles: $('#ingest-files'), ingestFolder: $('#ingest-folder'), ingestMeta: $('#ingest-metadata'),
    ingestList: $('#ingest-list'), ingestSummary: $('#ingest-summary'), uploadDrop: $('#upload-drop'),
    overlay: $('#drop-overlay'), viewer: $('#viewer'), viewerTitle: $('#viewer-title'),
    viewerImg: $('#viewer-img'), viewerMeta: $('#viewer-meta'), viewerSimilar: $('#viewer-similar'),
    keyDialog: $('#key-dialog'), keyForm: $('#key-form'), keyInput: $('#key-input'), keyError: $('#key-error'),
  };

  // ---- API access: one place adds the key and handles 401 -----------------

  let keyPrompt = null; // one prompt shared by every request that got a 401

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_STORAGE);
    return key ? { Authorization: 'ApiKey ' + key } : {};
  }

  // askKey shows the key dialog once for all concurrent 401s and resolves
  // when the user has entered a key.
  function askKey(refused) {
    if (!keyPrompt) {
      keyPrompt = new Promise((resolve) => {
        el.keyError.hidden = !refused;
        el.keyInput.value = '';
        const done = (e) => {
          e.preventDefault();
          const key = el.keyInput.value.trim();
          if (!key) return;
          sessionStorage.setItem(KEY_STORAGE, key);
          el.keyForm.removeEventListener('submit', done);
          el.keyDialog.close();
          keyPrompt = null;
          resolve();
        };
        el.keyForm.addEventListener('submit', done);
        el.keyDialog.showModal();
        el.keyInput.focus();
      });
    }
    return keyPrompt;
  }

  // api is fetch with the API key; on a 401 it asks for a key and retries.
  async function api(path, opts = {}) {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), ...authHeaders() } });
      if (res.status !== 401 || attempt > 3) return res;
      const hadKey = !!sessionStorage.getItem(KEY_STORAGE);
      if (hadKey) sessionStorage.removeItem(KEY_STORAGE);
      await askKey(hadKey);
    }
  }

  // errorText turns an API error response into one line.
  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && body.error) return `${body.error.message} (${body.error.code}, HTTP ${res.status})`;
    } catch (_) { /* not JSON */ }
    return `HTTP ${res.status} ${res.statusText}`;
  }

  // ---- state in the URL ----------------------------------------------------

  function readFilters() {
    const groups = {};
    for (const row of el.filterRows.querySelectorAll('.filter-row')) {
      const key = row.querySelector('.f-key').value.trim();
      const raw = row.querySelector('.f-value').value.trim();
      if (!key || raw === '') continue;
      (groups[key] = groups[key] || []).push(parseValue(raw));
    }
    const filter = {};
    for (const [k, vs] of Object.entries(groups)) filter[k] = vs.length === 1 ? vs[0] : vs;
    return filter;
  }

  // parseValue keeps numbers and booleans typed so they match numeric and
  // boolean metadata; everything else is a string.
  function parseValue(raw) {
    if (raw === 'true') return true;
    if (raw === 'false') return false;
    if (/^-?\d+(\.\d+)?$/.test(raw)) return Number(raw);
    return raw;
  }

  function params() {
    const p = {};
    const k = parseInt(el.k.value, 10);
    if (k > 0) p.k = k;
    if (el.minScore.value !== '') p.min_score = Number(el.minScore.value);
    const f = readFilters();
    if (Object.keys(f).length) p.filter = f;
    return p;
  }

  // pushState records a query (text or similar-to-id) with its options.
  function pushState(kind, value) {
    const u = new URLSearchParams();
    u.set(kind, value);
    const p = params();
    if (p.k) u.set('k', p.k);
    if (p.min_score !== undefined) u.set('min_score', p.min_score);
    if (p.filter) u.set('filter', JSON.stringify(p.filter));
    const url = '?' + u.toString();
    if (location.search !== url) history.pushState(null, '', url);
  }

  function restoreFromURL() {
    const u = new URLSearchParams(location.search);
    if (u.has('k')) el.k.value = u.get('k');
    el.minScore.value = u.get('min_score') || '';
    el.filterRows.textContent = '';
    if (u.has('filter')) {
      try {
        const f = JSON.parse(u.get('filter'));
        for (const [key, v] of Object.entries(f)) {
          for (const one of Array.isArray(v) ? v : [v]) addFilterRow(key, String(one));
        }
        el.options.open = true;
      } catch (_) { setStatus('The filter in the address is not valid JSON; ignored.', true); }
    }
    if (u.has('q')) {
      el.q.value = u.get('q');
      runText(false);
    } else if (u.has('similar')) {
      runSimilar(u.get('similar'), false);
    }
  }

  // ---- filters -------------------------------------------------------------

  function addFilterRow(key = '', value = '') {
    const row = document.createElement('div');
    row.className = 'filter-row';
    const k = document.createElement('input');
    k.className = 'f-key';
    k.placeholder = 'key';
    k.setAttribute('list', 'filter-keys');
    k.setAttribute('aria-label', 'Metadata key');
    k.value = key;
    const v = document.createElement('input');
    v.className = 'f-value';
    v.placeholder = 'value';
    v.setAttribute('aria-label', 'Value');
    v.value = value;
    const listId = 'fv-' + Math.random().toString(36).slice(2);
    const dl = document.createElement('datalist');
    dl.id = listId;
    v.setAttribute('list', listId);
    const fillValues = () => {
      dl.textContent = '';
      for (const val of knownValues.get(k.value.trim()) || []) {
        const o = document.createElement('option');
        o.value = val;
        dl.append(o);
      }
    };
    k.addEventListener('input', fillValues);
    fillValues();
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.className = 'secondary';
    rm.textContent = 'Remove';
    rm.setAttribute('aria-label', 'Remove this filter');
    rm.addEventListener('click', () => row.remove());
    row.append(k, v, dl, rm);
    el.filterRows.append(row);
    return row;
  }

  // knownValues: metadata keys and values seen in results, offered as
  // suggestions (the API has no "list keys" route; hits are the data at hand).
  const knownValues = new Map();

  function learnMetadata(hits) {
    for (const h of hits) {
      for (const [key, v] of Object.entries(h.metadata || {})) {
        if (v === null || typeof v === 'object') continue;
        if (!knownValues.has(key)) knownValues.set(key, new Set());
        const set = knownValues.get(key);
        if (set.size < 50) set.add(String(v));
      }
    }
    el.filterKeys.textContent = '';
    for (const key of [...knownValues.keys()].sort()) {
      const o = document.createElement('option');
      o.value = key;
      el.filterKeys.append(o);
    }
  }

  // ---- searches ------------------------------------------------------------

  let searchSeq = 0; // only the latest search may render

  function setStatus(text, isError) {
    el.status.textContent = text;
    el.status.classList.toggle('error', !!isError);
  }

  async function runSearch(label, request) {
    const seq = ++searchSeq;
    setStatus(`Searching ${label}…`);
    el.results.setAttribute('aria-busy', 'true');
    let res;
    try {
      res = await request();
    } catch (e) {
      if (seq === searchSeq) setStatus(`Search failed: ${e.message}`, true);
      el.results.removeAttribute('aria-busy');
      return;
    }
    if (seq !== searchSeq) return;
    el.results.removeAttribute('aria-busy');
    if (!res.ok) {
      setStatus(`Search failed: ${await errorText(res)}`, true);
      return;
    }
    const body = await res.json();
    if (seq !== searchSeq) return;
    renderResults(body.hits || []);
    learnMetadata(body.hits || []);
    setStatus(`${body.hits.length} result${body.hits.length === 1 ? '' : 's'} ${label} in ${body.took_ms} ms.`);
  }

  function runText(push = true) {
    const text = el.q.value.trim();
    if (!text) {
      el.q.focus();
      return;
    }
    if (push) pushState('q', text);
    showPreview(null);
    runSearch(`for “${text}”`, () => api('/v1/search/text', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ text, ...params() }),
    }));
  }

  function runImage(file) {
    if (!file) return;
    // An image query cannot live in the URL: keep the address plain.
    if (location.search) history.pushState(null, '', location.pathname);
    showPreview(file, `Images like ${file.name || 'the pasted image'}`);
    const fd = new FormData();
    fd.append('file', file, file.name || 'pasted.png');
    const p = params();
    if (p.k) fd.append('k', String(p.k));
    if (p.min_score !== undefined) fd.append('min_score', String(p.min_score));
    if (p.filter) fd.append('filter', JSON.stringify(p.filter));
    runSearch(`like ${file.name || 'the pasted image'}`, () => api('/v1/search/image', { method: 'POST', body: fd }));
  }

  // runSimilar shows more like image id; label names it (a file name when
  // known, else a short id).
  function runSimilar(id, push = true, label = shortId(id)) {
    if (push) pushState('similar', id);
    showPreviewId(id, label);
    const u = new URLSearchParams();
    const p = params();
    if (p.k) u.set('k', p.k);
    if (p.min_score !== undefined) u.set('min_score', p.min_score);
    if (p.filter) u.set('filter', JSON.stringify(p.filter));
    runSearch(`similar to ${label}`, () => api(`/v1/images/${encodeURIComponent(id)}/similar?${u}`));
  }

  // ---- query preview -------------------------------------------------------

  let previewURL = null;

  function showPreview(file, caption) {
    if (previewURL) URL.revokeObjectURL(previewURL);
    previewURL = null;
    el.preview.textContent = '';
    el.preview.hidden = !file;
    if (!file) return;
    previewURL = URL.createObjectURL(file);
    const img = document.createElement('img');
    img.src = previewURL;
    img.alt = 'Query image';
    const p = document.createElement('span');
    p.textContent = caption;
    el.preview.append(img, p);
  }

  function showPreviewId(id, label) {
    showPreview(null);
    el.preview.hidden = false;
    const img = document.createElement('img');
    img.alt = 'Query image';
    const p = document.createElement('span');
    p.textContent = `Images similar to ${label}`;
    el.preview.append(img, p);
    loadThumb(img, id, 128);
  }

  // ---- results grid --------------------------------------------------------

  let objectURLs = [];

  function shortId(id) {
    return /^[0-9a-f]{64}$/.test(id) ? id.slice(0, 12) + '…' : id;
  }

  function displayName(hit) {
    const md = hit.metadata || {};
    return md.image_name || md.filename || md.name || md.title || shortId(hit.id);
  }

  function renderResults(hits) {
    for (const u of objectURLs) URL.revokeObjectURL(u);
    objectURLs = [];
    thumbQueue.length = 0;
    el.results.textContent = '';
    for (const hit of hits) {
      const li = document.createElement('li');
      li.className = 'result';
      li.dataset.testid = 'result';
      li.dataset.id = hit.id;
      const name = displayName(hit);
      const md = Object.entries(hit.metadata || {}).filter(([k]) => k !== 'image_name' && k !== 'filename')
        .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`);
      li.title = [name, `score ${hit.score.toFixed(4)}`, ...md].join('\n');

      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'thumb';
      open.setAttribute('aria-label', `Open ${name} (score ${hit.score.toFixed(3)})`);
      const img = document.createElement('img');
      img.alt = name;
      img.decoding = 'async';
      open.append(img);
      open.addEventListener('click', () => openViewer(hit.id));

      const cap = document.createElement('div');
      cap.className = 'caption';
      const score = document.createElement('span');
      score.className = 'score';
      score.textContent = hit.score.toFixed(3);
      const nm = document.createElement('span');
      nm.className = 'name';
      nm.textContent = name;
      cap.append(score, nm);
      if (md.length) {
        const m = document.createElement('div');
        m.className = 'md';
        m.textContent = md.join(' · ');
        cap.append(m);
      }

      const more = document.createElement('button');
      more.type = 'button';
      more.className = 'more secondary';
      more.dataset.testid = 'more-like-this';
      more.textContent = 'More like this';
      more.setAttribute('aria-label', `More like ${name}`);
      more.addEventListener('click', () => runSimilar(hit.id, true, name));

      li.append(open, cap, more);
      el.results.append(li);
      loadThumb(img, hit.id, THUMB_SIZE);
    }
  }

  // Thumbnails are fetched with fetch() (so the API key header goes along)
  // and shown through object URLs, a few at a time.
  const thumbQueue = [];
  let thumbActive = 0;

  function loadThumb(img, id, size) {
    thumbQueue.push({ img, id, size });
    pumpThumbs();
  }

  function pumpThumbs() {
    while (thumbActive < THUMB_PARALLEL && thumbQueue.length) {
      const job = thumbQueue.shift();
      thumbActive++;
      fetchThumb(job).finally(() => {
        thumbActive--;
        pumpThumbs();
      });
    }
  }

  async function fetchThumb({ img, id, size }) {
    try {
      const res = await api(`/v1/images/${encodeURIComponent(id)}/thumbnail?size=${size}`);
      if (!res.ok) {
        img.closest('.thumb, .query-preview')?.classList.add('broken');
        img.alt = `${img.alt} (no preview: ${await errorText(res)})`;
        return;
      }
      const url = URL.createObjectURL(await res.blob());
      objectURLs.push(url);
      img.src = url;
    } catch (e) {
      img.alt = `${img.alt} (no preview: ${e.message})`;
    }
  }

  // ---- viewer --------------------------------------------------------------

  let viewerURL = null;
  let viewerId = null;

  async function openViewer(id) {
    viewerId = id;
    if (viewerURL) URL.revokeObjectURL(viewerURL);
    viewerURL = null;
    el.viewerImg.removeAttribute('src');
    el.viewerTitle.textContent = shortId(id);
    el.viewerMeta.textContent = '';
    el.viewer.showModal();
    const [metaRes, contentRes] = await Promise.all([
      api(`/v1/images/${encodeURIComponent(id)}`),
      api(`/v1/images/${encodeURIComponent(id)}/content`),
    ]);
    if (viewerId !== id) return;
    if (metaRes.ok) {
      const img = await metaRes.json();
      el.viewerTitle.textContent = displayName(img);
      const rows = [['id', img.id], ['type', img.content_type], ['size', `${img.width} × ${img.height} px, ${img.bytes} bytes`],
        ['added', img.created_at], ['model', `${img.model} ${img.model_version}`]];
      for (const [k, v] of Object.entries(img.metadata || {})) rows.push([k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
      for (const [k, v] of rows) {
        const tr = document.createElement('tr');
        const th = document.createElement('th');
        th.scope = 'row';
        th.textContent = k;
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(th, td);
        el.viewerMeta.append(tr);
      }
    } else {
      el.viewerTitle.textContent = await errorText(metaRes);
    }
    if (contentRes.ok) {
      viewerURL = URL.createObjectURL(await contentRes.blob());
      el.viewerImg.src = viewerURL;
      el.viewerImg.alt = el.viewerTitle.textContent;
    } else {
      el.viewerImg.alt = `Original not available: ${await errorText(contentRes)}`;
    }
  }

  // ---- uploads -------------------------------------------------------------

  // uploadOne posts one file with XMLHttpRequest (fetch has no upload
  // progress) and resolves with {status, body}.
  function uploadOne(file, metadata, onProgress) {
    return new Promise((resolve, reject) => {
      const fd = new FormData();
      fd.append('file', file, file.name);
      fd.append('metadata', JSON.stringify(metadata));
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/v1/images');
      for (const [h, v] of Object.entries(authHeaders())) xhr.setRequestHeader(h, v);
      xhr.upload.addEventListener('progress', (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
      xhr.addEventListener('load', () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        resolve({ status: xhr.status, body });
      });
      xhr.addEventListener('error', () => reject(new Error('network error')));
      xhr.send(fd);
    });
  }

  function statusRow(name) {
    const li = document.createElement('li');
    li.dataset.testid = 'ingest-status';
    li.dataset.name = name;
    li.dataset.state = 'queued';
    const n = document.createElement('span');
    n.className = 'file';
    n.textContent = name;
    const bar = document.createElement('progress');
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute('aria-label', `Upload of ${name}`);
    const out = document.createElement('span');
    out.className = 'outcome';
    out.textContent = 'queued';
    li.append(n, bar, out);
    el.ingestList.append(li);
    return {
      li,
      progress(f) { bar.value = f; },
      set(state, text) {
        li.dataset.state = state;
        out.textContent = text;
        if (state !== 'uploading') bar.value = 1;
      },
    };
  }

  function isImage(file) {
    return (file.type && file.type.startsWith('image/')) || IMAGE_EXT.test(file.name);
  }

  async function ingest(entries) {
    let extra = {};
    const metaText = el.ingestMeta.value.trim();
    if (metaText) {
      try {
        extra = JSON.parse(metaText);
        if (!extra || typeof extra !== 'object' || Array.isArray(extra)) throw new Error('not an object');
      } catch (e) {
        el.ingestSummary.textContent = `The upload metadata must be a JSON object (${e.message}); nothing was sent.`;
        el.ingestSummary.classList.add('error');
        return;
      }
    }
    el.ingestSummary.classList.remove('error');
    el.ingestList.textContent = '';
    const jobs = [];
    let skipped = 0;
    for (const { file, path } of entries) {
      const row = statusRow(path || file.name);
      if (!isImage(file)) {
        row.set('skipped', 'skipped: not an image file');
        skipped++;
        continue;
      }
      jobs.push({ file, path, row });
    }
    const counts = { created: 0, exists: 0, error: 0 };
    const total = jobs.length + skipped;
    const summary = () => {
      el.ingestSummary.textContent = `${counts.created} added, ${counts.exists} already indexed, ${counts.error} failed` +
        (skipped ? `, ${skipped} skipped` : '') + ` of ${total} file${total === 1 ? '' : 's'}.`;
    };
    summary();
    const next = async () => {
      while (jobs.length) {
        const { file, path, row } = jobs.shift();
        // The same keys as `tusou ingest`, so both kinds of upload read alike.
        const metadata = { ...extra, image_name: file.name };
        if (path && path !== file.name) metadata.relative_path = path;
        row.set('uploading', 'uploading…');
        for (;;) {
          try {
            const { status, body } = await uploadOne(file, metadata, (f) => row.progress(f));
            if (status === 401) {
              const hadKey = !!sessionStorage.getItem(KEY_STORAGE);
              if (hadKey) sessionStorage.removeItem(KEY_STORAGE);
              await askKey(hadKey);
              continue;
            }
            const item = body && body.items && body.items[0];
            if (status < 300 && item && !item.error) {
              const dup = item.result === 'exists';
              counts[dup ? 'exists' : 'created']++;
              row.li.dataset.id = item.id;
              row.set(dup ? 'exists' : 'created', dup ? 'duplicate: already indexed' : 'added');
            } else {
              const err = (item && item.error) || (body && body.error);
              counts.error++;
              row.set('error', err ? `${err.message} (${err.code})` : `HTTP ${status}`);
            }
          } catch (e) {
            counts.error++;
            row.set('error', e.message);
          }
          break;
        }
        summary();
      }
    };
    await Promise.all(Array.from({ length: UPLOAD_PARALLEL }, next));
  }

  // filesFromDrop walks dropped folders (webkitGetAsEntry) into a flat list
  // of {file, path}.
  async function filesFromDrop(dt) {
    const entries = [];
    const items = dt.items ? [...dt.items].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null)) : [];
    if (!items.length || items.some((e) => !e)) {
      return [...dt.files].map((file) => ({ file, path: file.name }));
    }
    const walk = async (entry, prefix) => {
      if (entry.isFile) {
        const file = await new Promise((res, rej) => entry.file(res, rej));
        entries.push({ file, path: prefix + entry.name });
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
          if (!batch.length) break;
          for (const child of batch) await walk(child, prefix + entry.name + '/');
        }
      }
    };
    for (const e of items) await walk(e, '');
    return entries;
  }

  // ---- events --------------------------------------------------------------

  // Enter searches, except while an IME composition is open (Chinese,
  // Japanese, Korean input commit their candidate with Enter).
  el.q.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    if (e.isComposing || e.keyCode === 229) return;
    runText();
  });
  el.form.addEventListener('submit', (e) => {
    e.preventDefault();
    runText();
  });
  el.searchImage.addEventListener('change', () => {
    runImage(el.searchImage.files[0]);
    el.searchImage.value = '';
  });
  el.addFilter.addEventListener('click', () => addFilterRow().querySelector('.f-key').focus());
  el.ingestFiles.addEventListener('change', () => {
    ingest([...el.ingestFiles.files].map((file) => ({ file, path: file.name })));
    el.ingestFiles.value = '';
  });
  el.ingestFolder.addEventListener('change', () => {
    ingest([...el.ingestFolder.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })));
    el.ingestFolder.value = '';
  });
  el.viewerSimilar.addEventListener('click', () => {
    el.viewer.close();
    if (viewerId) runSimilar(viewerId, true, el.viewerTitle.textContent);
  });
  el.viewer.addEventListener('close', () => {
    if (viewerURL) URL.revokeObjectURL(viewerURL);
    viewerURL = null;
    el.viewerImg.removeAttribute('src');
  });
  // Labels styled as buttons open their file input from the keyboard too.
  for (const label of document.querySelectorAll('label.button[for]')) {
    label.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        document.getElementById(label.htmlFor).click();
      }
    });
  }
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.key === '/' && !(t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement) && !el.viewer.open) {
      e.preventDefault();
      el.q.focus();
    }
  });

  // Paste an image anywhere: search with it. Text pastes stay text.
  document.addEventListener('paste', (e) => {
    const files = e.clipboardData ? [...e.clipboardData.files].filter(isImage) : [];
    if (!files.length) return;
    e.preventDefault();
    runImage(files[0]);
  });

  // Drop: on the upload area everything is ingested; elsewhere one image
  // searches and several files (or a folder) are ingested.
  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && [...(e.dataTransfer.types || [])].includes('Files');
  document.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    dragDepth++;
    el.overlay.hidden = false;
  });
  document.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) el.overlay.hidden = true;
  });
  document.addEventListener('dragover', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  document.addEventListener('drop', async (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    el.overlay.hidden = true;
    const toUpload = el.uploadDrop.contains(e.target);
    const entries = await filesFromDrop(e.dataTransfer);
    if (!toUpload && entries.length === 1 && isImage(entries[0].file)) {
      runImage(entries[0].file);
    } else if (entries.length) {
      ingest(entries);
      el.uploadDrop.scrollIntoView({ behavior: 'smooth', block: 'start' });
    }
  });

  window.addEventListener('popstate', restoreFromURL);
  restoreFromURL();
})();
