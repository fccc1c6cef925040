"""The web app: JSON API through FastAPI's test client, and the page driven by real headless Chromium."""

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'chiquito-or-not[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the test extra)")

from chiquito_or_not.stages.serve import create_app

from .helpers import photo
from .httpserver import Server, jpeg_bytes


@pytest.fixture(scope="module")
def model(tiny_run):
    return tiny_run[1].run / "model.pkl"


@pytest.fixture(scope="module")
def client(model):
    from fastapi.testclient import TestClient

    return TestClient(create_app(model, max_bytes=200_000, allow_private_urls=True, fetch_timeout=0.5))


@pytest.fixture(scope="module")
def strict_client(model):
    from fastapi.testclient import TestClient

    return TestClient(create_app(model))


@pytest.fixture(scope="module")
def images():
    with Server() as s:
        yield s


def png(w, h, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_health_page_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok", "classes": ["face", "not_face"], "model": "model.pkl"}
    page = client.get("/")
    assert page.status_code == 200 and "face / not_face" in page.text
    assert "http://" not in page.text.replace("http://127", "") and "https://cdn" not in page.text  # no CDN
    assert 'name="viewport"' in page.text
    assert "/api/predict" in client.get("/openapi.json").text and client.get("/docs").status_code == 200


def test_upload_gives_label_probabilities_and_timing(client):
    r = client.post("/api/predict", files={"file": ("cat.jpg", jpeg_bytes(3), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in ("face", "not_face") and set(body["probabilities"]) == {"face", "not_face"}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4 and body["probability"] >= 0.5
    assert {"decode_ms", "predict_ms", "total_ms"} <= set(body["timing"])


@pytest.mark.parametrize(
    "payload, status, words",
    [
        (("notes.txt", b"hello, not an image", "text/plain"), 415, "not_an_image"),
        (("half.jpg", jpeg_bytes(4, 200)[:3000], "image/jpeg"), 422, "truncated_or_corrupt"),
        (("big.jpg", b"\xff\xd8\xff" + b"0" * 300_000, "image/jpeg"), 413, "byte limit"),
        (("bomb.png", png(12_000, 12_000, "1"), "image/png"), 413, "decompression_bomb"),
        (("empty.jpg", b"", "image/jpeg"), 400, "empty"),
    ],
)
def test_bad_uploads_are_4xx_json(client, payload, status, words):
    r = client.post("/api/predict", files={"file": payload})
    assert r.status_code == status and words in r.json()["error"], r.text


def test_bad_requests_are_4xx_json(client):
    assert client.post("/api/predict", data={"x": "1"}).status_code == 415
    assert client.post("/api/predict", json={"nourl": 1}).status_code == 400
    r = client.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]


@pytest.mark.parametrize(
    "path, status, words",
    [
        ("/img/5.jpg", 200, ""),
        ("/slow.jpg", 422, "within 0.5 s"),  # the overall deadline (fetch_timeout)
        ("/page.html", 415, "not_image_content_type"),
        ("/html.jpg", 415, "not_an_image"),
        ("/big.jpg", 413, "too_large"),
        ("/loop", 422, "too_many_redirects"),
        ("/nothing", 422, "http_404"),
    ],
)
def test_urls(client, images, path, status, words):
    r = client.post("/api/predict", json={"url": images.base + path})
    assert r.status_code == status, r.text
    if words:
        assert words in r.json()["error"]
    else:
        assert "fetch_ms" in r.json()["timing"]


def test_private_addresses_are_refused_by_default(strict_client, images):
    for url in (
        images.base + "/img/1.jpg",
        "http://localhost/x.jpg",
        "http://[::1]/x.jpg",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/a.jpg",
    ):
        r = strict_client.post("/api/predict", json={"url": url})
        assert r.status_code == 403 and "not a public address" in r.json()["error"], url
    assert strict_client.post("/api/predict", json={"url": "ftp://example.org/a.jpg"}).status_code == 400
    assert images.hits["/img/1.jpg"] == 0


def test_backslash_before_at_does_not_reach_loopback(strict_client, images):
    """The parser differential from the hostile-input pass: the guard must judge the host it connects to."""
    before = sum(images.hits.values())
    port = images.base.rsplit(":", 1)[1]
    for url in (
        f"http://127.0.0.1:{port}\\@1.1.1.1/img/1.jpg",
        f"http://1.1.1.1@127.0.0.1:{port}/img/1.jpg",
        f"http://127.1:{port}/img/1.jpg",
        f"http://[::ffff:127.0.0.1]:{port}/img/1.jpg",
    ):
        r = strict_client.post("/api/predict", json={"url": url})
        assert r.status_code in (400, 403) and "error" in r.json(), (url, r.text)
    assert sum(images.hits.values()) == before


def test_hostile_requests_are_4xx_with_the_error_shape(client, images):
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post("/api/predict", content=deep.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (400, 413) and "error" in r.json()
    r = client.post(
        "/api/predict", content=b'{"url": "' + b"a" * 20_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "error" in r.json()
    nested = "[" * 5000 + "]" * 5000  # under the size cap, over Python's recursion limit
    r = client.post("/api/predict", content=nested.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nested" in r.json()["error"]
    for url in ("http://[::1/", "http://[zz]/", "http://exa mple.org/", "http://a\\@b/"):
        r = client.post("/api/predict", json={"url": url})
        assert r.status_code == 400 and "bad_url" in r.json()["error"], (url, r.text)
    for method, path, status in (("get", "/nowhere", 404), ("get", "/api/predict", 405), ("delete", "/", 405)):
        r = getattr(client, method)(path)
        assert r.status_code == status and set(r.json()) == {"error"}, r.text
    # a chunked upload with no Content-Length is capped too
    r = client.post(
        "/api/predict", content=iter([b"x" * 100_000] * 4), headers={"content-type": "multipart/form-data; boundary=zz"}
    )
    assert r.status_code == 413 and "error" in r.json()


def test_a_dripping_url_ends_at_the_deadline(client, images):
    """The server drips for longer than the app's fetch deadline: the answer names the deadline."""
    r = client.post("/api/predict", json={"url": images.base + "/drip.jpg"})
    assert r.status_code == 422 and "deadline" in r.json()["error"], r.text


def test_concurrent_requests_are_all_answered(client):
    results = []

    def one(i):
        r = client.post("/api/predict", files={"file": (f"{i}.jpg", jpeg_bytes(100 + i), "image/jpeg")})
        results.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == [200] * 12


def test_browser_upload_then_url(chromium, model, images, tmp_path, shared_roots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from .httpserver import app_in_chromium

    with app_in_chromium(create_app(model, allow_private_urls=True), tmp_path / "profile") as (browser, base):
        browser.get(f"{base}/")
        picture = tmp_path / "coffee.jpg"
        Image.fromarray(photo("coffee")).save(picture)
        browser.find_element(By.ID, "file").send_keys(str(picture))
        verdict = WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "verdict").text or None)
        assert verdict in ("face", "not_face")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 2
        shots = shared_roots[1] / "artifacts"
        shots.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shots / "serve-upload.png"))

        browser.execute_script("document.getElementById('verdict').textContent = ''")
        browser.find_element(By.ID, "url").send_keys(images.base + "/img/9.jpg")
        browser.find_element(By.ID, "go").click()
        verdict = WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "verdict").text or None)
        assert verdict in ("face", "not_face") and images.hits["/img/9.jpg"] >= 1
        assert "ms" in browser.find_element(By.ID, "status").text
        browser.save_screenshot(str(shots / "serve-url.png"))
        assert Path(shots / "serve-url.png").stat().st_size > 5000
