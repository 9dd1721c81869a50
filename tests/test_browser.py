"""A real browser: Debian's headless Chromium, driven by Playwright, uses the app as a person would."""
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from playwright.sync_api import expect, sync_playwright

import app

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it); Playwright downloads nothing


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: apt-get install -y chromium")
def test_upload_an_example_and_read_the_caption(app_url, tmp_path):
    example = sorted(app.EXAMPLES.glob("*.jpg"))[0]
    expected = Client(app_url, verbose=False).predict(handle_file(str(example)), 3, api_name="/caption")[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(app_url)
            expect(page.get_by_text("Flickr8k image captioner").first).to_be_visible()
            page.locator("input[type=file]").first.set_input_files(example)
            expect(page.locator("img[src*='gradio_api/file']").first).to_be_visible()  # the upload's preview
            page.get_by_role("button", name="Submit").click()
            caption = page.get_by_label("Caption", exact=True)
            expect(caption).to_have_value(expected, timeout=60_000)
            page.screenshot(path=tmp_path / "captioned.png", full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "captioned.png").stat().st_size > 0
