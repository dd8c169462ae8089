"""``index.html``: the static review page of a review package (no server, no network; works from ``file://``).

One self-contained file (inline CSS and JS, the per-image data embedded as JSON) next to ``overlays/``, ``images/``
and ``layers/``. At the top, the run's summary metrics (when the run was evaluated). Then a grid with one card per
image, least confident first; controls sort it and filter by predicted class, by decision (defective / OK) and by a
confidence range. Clicking a card opens the image large with the mask, the CAM and (where it exists) the ground
truth as layers to toggle, and its score, confidence and IoU.
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
  c.append(img, meta);
  c.addEventListener('click', () => openViewer(r));
  cards.set(r.id, c);
}
const key = {
  'confidence-asc': r => r.confidence ?? 2, 'confidence-desc': r => -(r.confidence ?? -1),
  'score-desc': r => -(r.score ?? -1), 'iou-asc': r => r.iou ?? 2, 'id': null,
};
function render() {
  const sort = $('sort').value, cls = $('class').value, dec = $('decision').value;
  const lo = parseFloat($('cmin').value), hi = parseFloat($('cmax').value);
  let rows = DATA.images.slice();
  if (key[sort]) rows.sort((a, b) => key[sort](a) - key[sort](b) || a.id.localeCompare(b.id));
  else rows.sort((a, b) => a.id.localeCompare(b.id));
  let shown = 0;
  grid.replaceChildren();
  for (const r of rows) {
    const c = r.confidence ?? 0;
    const ok = (cls === 'all' || (cls === '(none)' ? r.classes.length === 0 : r.classes.includes(cls))) &&
      (dec === 'all' || decisionOf(r) === dec) && !(c < lo) && !(c > hi);
    const card = cards.get(r.id);
    card.classList.toggle('hidden', !ok);
    grid.append(card);
    shown += ok;
  }
  $('count').textContent = shown + ' of ' + DATA.images.length + ' shown';
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
    (r.classes.length ? ' · ' + r.classes.join(', ') : ' · no defect');
  $('viewer').classList.remove('hidden');
}
for (const name of ['mask', 'cam', 'gt']) {
  $('show-' + name).addEventListener('change', e => $('layer-' + name).classList.toggle('hidden', !e.target.checked));
}
$('close').addEventListener('click', () => $('viewer').classList.add('hidden'));
document.addEventListener('keydown', e => { if (e.key === 'Escape') $('viewer').classList.add('hidden'); });
for (const id of ['sort', 'class', 'decision', 'cmin', 'cmax']) $(id).addEventListener('input', render);
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


def write_page(
    path: Path, records: list[dict[str, Any]], classes: list[str], summary: dict[str, Any] | None, source: str
) -> Path:
    """Write the page for ``records`` (one dict per image, as :func:`wsss.export.review.build_review` makes them)."""
    data = json.dumps({"images": records, "classes": classes}, allow_nan=False).replace("</", "<\\/")
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
