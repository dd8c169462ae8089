"""``index.html``: the static review page of a review package (no server, no network; works from ``file://``).

One self-contained file (inline CSS and JS, the per-image data embedded as JSON) next to ``overlays/``, ``images/``
and ``layers/``. At the top, the run's summary metrics (when the run was evaluated). Then a grid with one card per
image, least confident first; controls sort it and filter by predicted class, by decision (defective / OK) and by a
confidence range. Clicking a card opens the image large with the mask, the CAM and (where it exists) the ground
truth as layers to toggle, and its score, confidence and IoU.

Triage: each card has Accept and Reject buttons (keys on the focused card: ``a`` accept, ``r`` reject, ``u``
undecided; ``j``/``k`` or the arrow keys move, ``Enter`` enlarges; deciding moves on to the next card shown), a
counter of accepted / rejected / undecided images and a filter by review state. Decisions live in ``localStorage``
under a key made of the package's identity (run, masks stage, masks digest), so a reload keeps them and another
package does not see them; where a browser refuses storage the page still works and says so. "Download decisions"
saves the decisions file that `wsss import-review --format decisions` reads (format:
:mod:`wsss.export.review_import`); ``window.wsssDecisions()`` returns the same object, for tests and the console.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from wsss.atomic import atomic_write_text

SUMMARY_KEYS = (
    ("ap", "image AP"),
    ("auroc", "image AUROC"),
    ("miou_def", "mIoU_def"),
    ("pooled_iou", "pooled IoU"),
    ("seg_miou", "Seg_mIoU"),
    ("seg_recall@0.1", "Seg_Recall@0.1"),
    ("seg_recall@0.5", "Seg_Recall@0.5"),
)

STYLE = """
body{font:14px system-ui,sans-serif;margin:0;background:#1d1f21;color:#e8e8e8}
header{padding:12px 16px;background:#26292c;position:sticky;top:0;z-index:2}
h1{font-size:18px;margin:0 0 8px}
table.summary{border-collapse:collapse;margin:4px 0 8px}
table.summary td,table.summary th{border:1px solid #444;padding:2px 8px;text-align:right}
.controls{display:flex;gap:12px;flex-wrap:wrap;align-items:center}
.controls input[type=number]{width:5em}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:10px;padding:12px 16px}
.card{background:#2b2e31;border:1px solid #3a3d40;border-radius:6px;overflow:hidden;cursor:pointer}
.card:hover{border-color:#7aa2f7}
.card img{width:100%;height:140px;object-fit:contain;background:#000;display:block}
.card .meta{padding:4px 8px;font-size:12px;display:flex;justify-content:space-between;gap:6px}
.card .id{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.hidden{display:none!important}
#viewer{position:fixed;inset:0;background:rgba(0,0,0,.94);z-index:5;display:flex;flex-direction:column;align-items:center;padding:16px}
#viewer .bar{display:flex;gap:14px;align-items:center;margin-bottom:8px}
#stack{position:relative}
#stack img{display:block;width:100%;height:100%;image-rendering:pixelated}
#stack img.layer{position:absolute;left:0;top:0}
.card:focus{outline:2px solid #7aa2f7;outline-offset:1px}
.card.accept{border-color:#3fb950;box-shadow:inset 0 0 0 2px #3fb950}
.card.reject{border-color:#f85149;box-shadow:inset 0 0 0 2px #f85149}
.card .triage{display:flex;gap:6px;padding:0 8px 6px}
.triage button{flex:1;background:#3a3d40;color:#e8e8e8;border:1px solid #555;border-radius:4px;cursor:pointer}
.triage button.accept[aria-pressed=true]{background:#238636;border-color:#3fb950}
.triage button.reject[aria-pressed=true]{background:#b62324;border-color:#f85149}
.keys{font-size:12px;color:#aaa}
"""

SCRIPT = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const grid = document.getElementById('grid');
const $ = id => document.getElementById(id);
const fmt = v => v === null || v === undefined ? 'n/a' : v.toFixed(3);
const decisionOf = r => r.score === null ? (r.classes.length ? 'defect' : 'ok') : (r.score >= 0.5 ? 'defect' : 'ok');
const cards = new Map();
for (const r of DATA.images) {
  const c = document.createElement('div');
  c.className = 'card';
  c.dataset.id = r.id;
  const img = document.createElement('img');
  img.loading = 'lazy'; img.src = r.overlay; img.alt = r.id;
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.innerHTML = '<span class="id"></span><span>conf ' + fmt(r.confidence) + ' · score ' + fmt(r.score) +
    (r.iou === null ? '' : ' · IoU ' + fmt(r.iou)) + '</span>';
  meta.querySelector('.id').textContent = r.id + (r.classes.length ? ' [' + r.classes.join(', ') + ']' : '');
  const triage = document.createElement('div');
  triage.className = 'triage';
  for (const [d, label] of [['accept', 'Accept (a)'], ['reject', 'Reject (r)']]) {
    const b = document.createElement('button');
    b.className = d; b.textContent = label; b.type = 'button'; b.tabIndex = -1;
    b.addEventListener('click', e => {  // a second click takes the decision back
      e.stopPropagation();
      focusedId = r.id;  // the keys act on the card whose button was clicked
      c.focus({preventScroll: true});
      decide(r.id, decisions.get(r.id) === d ? null : d);
    });
    triage.append(b);
  }
  c.tabIndex = 0;
  c.append(img, meta, triage);
  c.addEventListener('click', () => openViewer(r));
  c.addEventListener('focus', () => { focusedId = r.id; });
  cards.set(r.id, c);
}
const records = new Map(DATA.images.map(r => [r.id, r]));
// Triage: decisions (id -> 'accept' | 'reject'; undecided ids absent), kept in localStorage under the package's key.
const PKG = DATA.package;
const STORE = 'wsss-review-decisions:' + JSON.stringify([PKG.run, PKG.masks]);
const decisions = new Map();
let stored = true, focusedId = null;
try {
  const saved = JSON.parse(localStorage.getItem(STORE) || '{}');
  for (const [id, d] of Object.entries(saved)) {
    if (records.has(id) && (d === 'accept' || d === 'reject')) decisions.set(id, d);
  }
} catch (e) { stored = false; }  // storage refused (some browsers from file://) or unreadable: this page only
function save() {
  try { localStorage.setItem(STORE, JSON.stringify(Object.fromEntries(decisions))); stored = true; }
  catch (e) { stored = false; }
}
function paint(id) {
  const c = cards.get(id), d = decisions.get(id);
  c.classList.toggle('accept', d === 'accept');
  c.classList.toggle('reject', d === 'reject');
  c.dataset.decision = d || 'undecided';
  for (const b of c.querySelectorAll('.triage button')) b.setAttribute('aria-pressed', String(b.className === d));
}
function decide(id, d) {
  if (d) decisions.set(id, d); else decisions.delete(id);
  save();
  paint(id);
  render();
  if (!$('viewer').classList.contains('hidden') && $('viewer').dataset.id === id) openViewer(records.get(id));
}
window.wsssDecisions = () => ({
  format: PKG.format, version: PKG.version, run: PKG.run, masks: PKG.masks,
  decisions: Object.fromEntries([...decisions].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
});
const key = {
  'confidence-asc': r => r.confidence ?? 2, 'confidence-desc': r => -(r.confidence ?? -1),
  'score-desc': r => -(r.score ?? -1), 'iou-asc': r => r.iou ?? 2, 'id': null,
};
function render() {
  const sort = $('sort').value, cls = $('class').value, dec = $('decision').value, review = $('review').value;
  const lo = parseFloat($('cmin').value), hi = parseFloat($('cmax').value);
  let rows = DATA.images.slice();
  if (key[sort]) rows.sort((a, b) => key[sort](a) - key[sort](b) || a.id.localeCompare(b.id));
  else rows.sort((a, b) => a.id.localeCompare(b.id));
  let shown = 0;
  grid.replaceChildren();
  for (const r of rows) {
    const c = r.confidence ?? 0;
    const ok = (cls === 'all' || (cls === '(none)' ? r.classes.length === 0 : r.classes.includes(cls))) &&
      (dec === 'all' || decisionOf(r) === dec) && !(c < lo) && !(c > hi) &&
      (review === 'all' || (decisions.get(r.id) || 'undecided') === review);
    const card = cards.get(r.id);
    card.classList.toggle('hidden', !ok);
    grid.append(card);
    shown += ok;
  }
  $('count').textContent = shown + ' of ' + DATA.images.length + ' shown';
  const n = DATA.images.length, na = [...decisions.values()].filter(d => d === 'accept').length;
  const nr = decisions.size - na;
  $('triage-count').textContent = na + ' accepted · ' + nr + ' rejected · ' + (n - na - nr) + ' undecided of ' + n +
    (stored ? '' : ' (not saved by this browser: download them before closing)');
  const focused = cards.get(focusedId);  // re-appending a card blurs it
  if (focused && !focused.classList.contains('hidden') && document.activeElement !== focused) {
    focused.focus({preventScroll: true});
  }
}
const shownCards = () => [...grid.children].filter(c => !c.classList.contains('hidden'));
function focusCard(card) {
  focusedId = card.dataset.id;
  card.focus();
  card.scrollIntoView({block: 'nearest'});
  if (!$('viewer').classList.contains('hidden')) openViewer(records.get(focusedId));  // the viewer follows
}
function openViewer(r) {
  const scale = Math.min(0.94 * innerWidth / r.width, 0.8 * innerHeight / r.height);  // fit the window, up or down
  $('stack').style.width = Math.round(r.width * scale) + 'px';
  $('stack').style.height = Math.round(r.height * scale) + 'px';
  $('vbase').src = r.image;
  for (const name of ['mask', 'cam', 'gt']) {
    const has = r.layers.includes(name), box = $('show-' + name), layer = $('layer-' + name);
    box.disabled = !has;
    if (has) layer.src = 'layers/' + r.id + '.' + name + '.png'; else layer.removeAttribute('src');
    layer.classList.toggle('hidden', !has || !box.checked);
  }
  $('vinfo').textContent = r.id + ' (' + r.split + ') · score ' + fmt(r.score) + ' · confidence ' +
    fmt(r.confidence) + (r.iou === null ? '' : ' · IoU ' + fmt(r.iou)) +
    (r.classes.length ? ' · ' + r.classes.join(', ') : ' · no defect') +
    ' · ' + ({accept: 'accepted', reject: 'rejected'}[decisions.get(r.id)] || 'undecided');
  $('viewer').dataset.id = r.id;
  $('viewer').classList.remove('hidden');
}
for (const name of ['mask', 'cam', 'gt']) {
  $('show-' + name).addEventListener('change', e => $('layer-' + name).classList.toggle('hidden', !e.target.checked));
}
$('close').addEventListener('click', () => $('viewer').classList.add('hidden'));
document.addEventListener('keydown', e => {
  if (e.key === 'Escape') { $('viewer').classList.add('hidden'); return; }
  if (e.ctrlKey || e.metaKey || e.altKey || /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
  const shown = shownCards(), at = shown.indexOf(cards.get(focusedId));
  const step = {j: 1, ArrowDown: 1, ArrowRight: 1, k: -1, ArrowUp: -1, ArrowLeft: -1}[e.key];
  const verdict = {a: 'accept', r: 'reject', u: null}[e.key];
  if (step !== undefined && shown.length) {
    e.preventDefault();
    focusCard(shown[at < 0 ? (step > 0 ? 0 : shown.length - 1) : Math.max(0, Math.min(shown.length - 1, at + step))]);
  } else if (verdict !== undefined && at >= 0) {
    e.preventDefault();
    decide(focusedId, verdict);
    // on to the next card still shown after this one (the filter may have hidden this one), else back
    const visible = c => !c.classList.contains('hidden');
    const next = shown.slice(at + 1).find(visible) || shown.slice(0, at + 1).reverse().find(visible);
    if (next) focusCard(next);
  } else if (e.key === 'Enter' && at >= 0 && e.target === shown[at]) {
    openViewer(records.get(focusedId));
  }
});
$('download').addEventListener('click', () => {
  const blob = new Blob([JSON.stringify(window.wsssDecisions(), null, 1) + '\\n'], {type: 'application/json'});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = ('decisions-' + PKG.run.name + '-' + PKG.masks).replace(/[^A-Za-z0-9._-]+/g, '_') + '.json';
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
});
for (const id of ['sort', 'class', 'decision', 'review', 'cmin', 'cmax']) $(id).addEventListener('input', render);
for (const id of cards.keys()) paint(id);
render();
"""


def _summary_table(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "<p>Not evaluated (run the evaluate stage for the summary metrics).</p>"
    cells = []
    for k, name in SUMMARY_KEYS:
        v = summary.get(k)
        cells.append((name, "n/a" if v is None else f"{100 * float(v):.2f}%"))
    head = "".join(f"<th>{html.escape(n)}</th>" for n, _ in cells)
    body = "".join(f"<td>{v}</td>" for _, v in cells)
    return f'<table class="summary"><tr>{head}</tr><tr>{body}</tr></table>'


# what may not appear raw in a <script> block's JSON: "<" opens "</script>" and "<!--" (either ends or hides the
# block), ">" and "&" complete them, U+2028/U+2029 end a JavaScript line in older engines. As \uXXXX escapes the
# JSON decodes to the same strings
_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside an HTML ``<script>`` element, whatever its strings hold."""
    return json.dumps(data, allow_nan=False).translate(_SCRIPT_ESCAPES)


def write_page(
    path: Path,
    records: list[dict[str, Any]],
    classes: list[str],
    summary: dict[str, Any] | None,
    source: str,
    package: dict[str, Any],
) -> Path:
    """Write the page for ``records`` (one dict per image, as :func:`wsss.export.review.build_review` makes them);
    ``package`` is the decisions file's header (:func:`wsss.export.review.package_identity`)."""
    payload = {"images": records, "classes": classes, "package": package}
    data = script_json(payload)
    options = "".join(f"<option>{html.escape(c)}</option>" for c in [*classes, "(none)"])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>wsss review: {html.escape(source)}</title>
<style>{STYLE}</style></head>
<body>
<header>
<h1>wsss review: masks of <code>{html.escape(source)}</code>, {len(records)} images</h1>
{_summary_table(summary)}
<div class="controls">
<label>sort <select id="sort">
<option value="confidence-asc">confidence, lowest first</option><option value="confidence-desc">confidence, highest first</option>
<option value="score-desc">score, highest first</option><option value="iou-asc">IoU, lowest first</option>
<option value="id">id</option></select></label>
<label>class <select id="class"><option value="all">all</option>{options}</select></label>
<label>decision <select id="decision"><option value="all">all</option><option value="defect">defective</option>
<option value="ok">OK</option></select></label>
<label>confidence <input id="cmin" type="number" min="0" max="1" step="0.05" value="0"> to
<input id="cmax" type="number" min="0" max="1" step="0.05" value="1"></label>
<span id="count"></span>
</div>
<div class="controls">
<label>review <select id="review"><option value="all">all</option><option value="accept">accepted</option>
<option value="reject">rejected</option><option value="undecided">undecided</option></select></label>
<span id="triage-count"></span>
<button id="download" type="button">Download decisions</button>
<span class="keys">keys: j / k or arrows move · a accept · r reject · u undecided · Enter enlarge · Esc close</span>
</div>
</header>
<main id="grid"></main>
<div id="viewer" class="hidden">
<div class="bar"><span id="vinfo"></span>
<label><input type="checkbox" id="show-mask" checked> mask</label>
<label><input type="checkbox" id="show-cam"> CAM</label>
<label><input type="checkbox" id="show-gt" checked> ground truth</label>
<button id="close">close (Esc)</button></div>
<div id="stack"><img id="vbase" alt="image">
<img id="layer-cam" class="layer hidden" alt=""><img id="layer-mask" class="layer" alt="">
<img id="layer-gt" class="layer" alt=""></div>
</div>
<script type="application/json" id="data">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""
    atomic_write_text(path, page)
    return path
