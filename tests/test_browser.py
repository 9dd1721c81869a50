"""A real browser: Debian's headless Chromium, driven by Playwright, uses the app as a person would:
at desktop and phone widths, and embedded in another page."""
import http.server
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import expect, sync_playwright

import app
from conftest import free_port
from pipeline import Captioner

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it); Playwright downloads nothing
EXAMPLE = sorted(app.EXAMPLES.glob("*.jpg"))[0]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: apt-get install -y chromium")
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def unfamiliar_url(tiny_model, random_encoder):
    """The app with a calibration that calls every photo unfamiliar (every dev photo at distance 0)."""
    from pipeline.encoder import FEATURE_DIM
    from pipeline.familiarity import Familiarity

    captioner = Captioner.from_pretrained(tiny_model, image_encoder=random_encoder)
    captioner.config = {**captioner.config, "familiarity": {"unfamiliar_below": 0.03}}
    captioner.familiarity = Familiarity(np.eye(1, FEATURE_DIM), np.zeros(10))
    demo = app.build_demo(captioner)
    _, url, _ = app.serve(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def clipped(page, selector: str) -> list[str]:
    """The texts of the visible elements matching `selector` that cut their text off: wider than
    their box where it cannot wrap or ends in an ellipsis (a header read "pr..." at 1000 px)."""
    # checkVisibility: Gradio's table keeps a hidden copy of its rows to measure columns with
    return page.eval_on_selector_all(selector, """els => els.filter(e => e.textContent.trim()
            && e.checkVisibility({visibilityProperty: true, opacityProperty: true}))
        .filter(e => {
            const style = getComputedStyle(e);
            return e.scrollWidth > e.clientWidth + 1 && (style.textOverflow === "ellipsis"
                || (style.whiteSpace === "nowrap" && style.overflowX !== "visible"));
        }).map(e => e.textContent.trim())""")


def settled_clipped(page, selector: str, seconds: float = 15) -> list[str]:
    """clipped(), once the layout has settled: Gradio's table lays its cells out again after it fills
    them, so a cell may be cut off for a moment before its text wraps."""
    for _ in range(int(seconds * 2)):
        if not (found := clipped(page, selector)):
            return found
        page.wait_for_timeout(500)
    return found


def caption_on_the_page(page, photo: Path, expected: str) -> None:
    page.locator("input[type=file]").first.set_input_files(photo)
    expect(page.locator("img[src*='gradio_api/file']").first).to_be_visible()  # the upload's preview
    page.get_by_role("button", name="Caption it").click()
    expect(page.get_by_label("Caption", exact=True)).to_have_value(expected, timeout=60_000)


def test_upload_an_example_and_read_the_caption(browser, app_url, tmp_path):
    expected = Client(app_url, verbose=False).predict(handle_file(str(EXAMPLE)), 3, api_name="/caption")[0]
    page = browser.new_page()
    page.goto(app_url)
    expect(page.get_by_text("Flickr8k image captioner").first).to_be_visible()
    caption_on_the_page(page, EXAMPLE, expected)
    page.screenshot(path=tmp_path / "captioned.png", full_page=True)
    assert (tmp_path / "captioned.png").stat().st_size > 0


def test_the_page_shows_where_the_model_looked_for_each_word(browser, attention_app_url, app_url, tmp_path):
    """With an attention model: a choice per word of the caption, and the photo lit where the model
    looked for the chosen word (dimmed elsewhere), a new picture for another word. Without one, the
    page says it cannot show this."""
    import io

    looked = Client(attention_app_url, verbose=False).predict(handle_file(str(EXAMPLE)), 3,
                                                               api_name="/where_it_looked")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(attention_app_url)
    caption_on_the_page(page, EXAMPLE, looked["caption"])
    words = page.locator("#looked-word label")
    expect(words).to_have_count(len(looked["words"]))
    assert [words.nth(i).inner_text().strip() for i in range(len(looked["words"]))] == [
        f"{i}. {w}" for i, w in enumerate(looked["words"], 1)]
    lit = page.locator("#looked-photo img")
    expect(lit).to_be_visible()
    first = lit.get_attribute("src")
    shot = tmp_path / "where-it-looked.png"
    page.screenshot(path=shot, full_page=True)
    shown = np.asarray(Image.open(io.BytesIO(httpx.get(first).content)).convert("RGB"), np.float32)
    photo = np.asarray(Image.open(EXAMPLE).convert("RGB"), np.float32)
    assert shown.shape == photo.shape
    assert shown.mean() < 0.9 * photo.mean()  # dimmed where the model did not look
    assert np.corrcoef(shown.ravel(), photo.ravel())[0, 1] > 0.5  # and it is the photo
    assert np.mean(shown <= photo + 8) > 0.99  # lit, never brightened (the page's WebP copy is lossy)
    words.nth(1).click()
    expect(lit).not_to_have_attribute("src", first)
    print(f"\nscreenshot of where it looked: {shot}")

    plain = browser.new_page()
    plain.goto(app_url)
    expect(plain.get_by_text("cannot show where it looked")).to_be_visible()


def photo_captioned_at(browser, url, width: str, photo: Path, expected: str):
    """A page at `width` with beam size 5, `photo` uploaded and captioned: the button in reach, the
    photo never filling the screen, the caption large, the note beside it."""
    page = browser.new_page(viewport=dict(zip(("width", "height"), WIDTHS[width])))
    page.goto(url)
    page.get_by_label("Beam size").last.fill("5")  # the slider's number box
    page.get_by_label("Beam size").last.press("Enter")
    page.locator("input[type=file]").first.set_input_files(photo)
    expect(page.locator("img[src*='gradio_api/file']").first).to_be_visible()
    button = page.get_by_role("button", name="Caption it")
    button.scroll_into_view_if_needed()
    photo_box = page.locator("img[src*='gradio_api/file']").first.bounding_box()
    assert photo_box["height"] <= WIDTHS[width][1] * 0.75  # the photo never fills the screen
    button.click()
    caption = page.get_by_label("Caption", exact=True)
    expect(caption).to_have_value(expected, timeout=60_000)
    assert float(caption.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 24
    expect(page.locator("#familiarity-note")).to_contain_text(app.UNFAMILIAR_NOTE)
    expect(page.locator("#best-captions")).to_contain_text("%")
    return page


@pytest.mark.slow
def test_the_page_reads_at_a_glance_on_a_desktop_and_a_phone(browser, unfamiliar_url, tmp_path):
    """At each width: a tall photo leaves the button in reach; the caption is large; the note stays
    beside it; Clear keeps the options; no header or cell of either tab is cut off. Both pages wait
    out a toast's life together."""
    tall = tmp_path / "tall.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1800, 600, 3), np.uint8)).save(tall)
    expected = Client(unfamiliar_url, verbose=False).predict(handle_file(str(tall)), 5, api_name="/caption")[0]
    pages = {width: photo_captioned_at(browser, unfamiliar_url, width, tall, expected) for width in WIDTHS}
    next(iter(pages.values())).wait_for_timeout(31_000)  # a toast would have gone by now
    for width, page in pages.items():
        expect(page.locator("#familiarity-note")).to_contain_text(app.UNFAMILIAR_NOTE)
        assert settled_clipped(page, "#best-captions *") == []
        page.screenshot(path=tmp_path / f"photo-{width}.png", full_page=True)

        page.get_by_role("button", name="Clear").click()
        expect(page.get_by_label("Caption", exact=True)).to_have_value("")
        assert page.get_by_label("Beam size").last.input_value() == "5"  # the options stay

        page.get_by_role("tab", name="Many photos").click()
        page.locator("input[type=file][multiple]").set_input_files([tall, EXAMPLE])
        page.get_by_role("button", name="Caption them").click()
        expect(page.locator("#batch-table")).to_contain_text("yes", timeout=60_000)  # the unfamiliar column
        headers = page.locator("th").all_text_contents()
        assert all(column in " ".join(headers) for column in app.BATCH_COLUMNS)
        assert settled_clipped(page, "#batch-table th, #batch-table th *, #batch-table td, #batch-table td *") == []
        page.screenshot(path=tmp_path / f"batch-{width}.png", full_page=True)


@pytest.fixture
def embedding_page(tmp_path, app_url):
    """A page of another site (its own local server) embedding the app twice: an iframe, and Gradio's
    web component loaded from the app's own /gradio.js."""
    (tmp_path / "index.html").write_text(f"""<!doctype html><html><head><meta charset="utf-8">
<script type="module" src="{app_url}gradio.js"></script></head><body>
<h1>A blog post</h1>
<gradio-app src="{app_url}"></gradio-app>
<iframe id="framed" src="{app_url}" width="1000" height="900"></iframe>
</body></html>""")
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


def test_a_photo_is_captioned_through_both_embeds(browser, app_url, embedding_page):
    expected = Client(app_url, verbose=False).predict(handle_file(str(EXAMPLE)), 3, api_name="/caption")[0]
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    page.goto(embedding_page)
    component = page.locator("gradio-app")
    expect(component.get_by_role("button", name="Caption it")).to_be_visible(timeout=60_000)
    component.locator("input[type=file]").first.set_input_files(EXAMPLE)
    expect(component.locator("img[src*='gradio_api/file']").first).to_be_visible()
    component.get_by_role("button", name="Caption it").click()
    expect(component.get_by_label("Caption", exact=True)).to_have_value(expected, timeout=60_000)

    framed = page.frame_locator("#framed")
    framed.locator("input[type=file]").first.set_input_files(EXAMPLE)
    expect(framed.locator("img[src*='gradio_api/file']").first).to_be_visible()
    framed.get_by_role("button", name="Caption it").click()
    expect(framed.get_by_label("Caption", exact=True)).to_have_value(expected, timeout=60_000)
    assert settled_clipped(page.frames[-1], "#best-captions *") == []
