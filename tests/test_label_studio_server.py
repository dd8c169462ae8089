"""The Label Studio steps of docs/usage.md, run against a real server (out of CI: ``pytest -m server``).

Start Label Studio as docs/usage.md says, with its local-file document root at an empty folder, then::

    WSSS_LS_URL=http://localhost:8080 WSSS_LS_USER=qc@example.com WSSS_LS_PASSWORD=... WSSS_LS_ROOT=/that/folder \
        pytest -m server tests/test_label_studio_server.py

The test exports the tiny run's review package into ``WSSS_LS_ROOT``, then does over the REST API (logged in as the
browser is) what the docs' steps do in the UI: create the project with ``labelstudio_config.xml``, add the Local
Files storage at ``<package>/images``, import ``labelstudio.json``, fetch an image, submit the predictions of a few
tasks as a reviewer would, export the project as JSON, and ``wsss import-review`` it: the masks come back unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsss.config import ExportConfig
from wsss.export.review import build_review, run_source
from wsss.export.review_import import import_review

ENV = ("WSSS_LS_URL", "WSSS_LS_USER", "WSSS_LS_PASSWORD", "WSSS_LS_ROOT")
pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not all(os.environ.get(k) for k in ENV), reason=f"needs a Label Studio server: set {ENV}"),
]


def _session(url: str):
    import requests  # label-studio-converter's dependency; only this server test uses it

    s = requests.Session()
    s.get(f"{url}/user/login/", timeout=30)
    form = {"email": os.environ["WSSS_LS_USER"], "password": os.environ["WSSS_LS_PASSWORD"]}
    r = s.post(
        f"{url}/user/login/",
        data=form | {"csrfmiddlewaretoken": s.cookies.get("csrftoken")},
        headers={"Referer": f"{url}/user/login/"},
        timeout=30,
    )
    assert r.ok and "/user/login" not in r.url, "login refused: check WSSS_LS_USER and WSSS_LS_PASSWORD"
    s.headers.update({"X-CSRFToken": s.cookies.get("csrftoken"), "Referer": url})
    return s


def test_label_studio_server_imports_serves_and_exports_the_package(review_run: Path):
    url, root = os.environ["WSSS_LS_URL"].rstrip("/"), Path(os.environ["WSSS_LS_ROOT"])
    pkg = root  # the document root is the package folder: image URLs are /data/local-files/?d=images/<id>.<ext>
    shutil.rmtree(pkg / "images", ignore_errors=True)
    build_review(run_source(review_run, "retrain"), pkg, ExportConfig(formats=["labelstudio"]))
    s = _session(url)
    config = (pkg / "labelstudio_config.xml").read_text()
    project = s.post(f"{url}/api/projects", json={"title": "wsss review test", "label_config": config}, timeout=30)
    assert project.status_code == 201, project.text[:300]
    pid = project.json()["id"]
    try:
        storage = {"project": pid, "title": "package images", "path": str(pkg / "images"), "use_blob_urls": False}
        assert s.post(f"{url}/api/storages/localfiles", json=storage, timeout=30).status_code == 201
        with open(pkg / "labelstudio.json", "rb") as f:
            files = {"file": ("labelstudio.json", f, "application/json")}
            imported = s.post(f"{url}/api/projects/{pid}/import", files=files, timeout=120)
        assert imported.status_code == 201, imported.text[:300]
        tasks = s.get(f"{url}/api/tasks", params={"project": pid, "page_size": 10000}, timeout=60).json()["tasks"]
        assert tasks and all(t["total_predictions"] == 1 for t in tasks)
        image = s.get(url + tasks[0]["data"]["image"], timeout=30)
        assert image.status_code == 200 and image.headers["Content-Type"].startswith("image/")
        for t in tasks:  # the reviewer submits every prediction unchanged
            pred = s.get(f"{url}/api/predictions", params={"task": t["id"]}, timeout=30).json()[0]
            ann = {"result": pred["result"], "was_cancelled": False}
            assert s.post(f"{url}/api/tasks/{t['id']}/annotations", json=ann, timeout=30).status_code == 201
        export = s.get(f"{url}/api/projects/{pid}/export", params={"exportType": "JSON"}, timeout=120)
        assert export.status_code == 200
        (root / "export.json").write_bytes(export.content)
        summary = import_review("labelstudio", root / "export.json", review_run)
        masks = sorted((review_run / "retrain" / "masks").glob("*.png"))
        assert sorted(summary.imported) == sorted(p.stem for p in masks)
        for p in masks:
            back = cv2.imread(str(review_run / "reviewed" / "masks" / p.name), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(back, cv2.imread(str(p), cv2.IMREAD_UNCHANGED)), p.name
    finally:
        s.delete(f"{url}/api/projects/{pid}", timeout=30)
