// Signs in to the operators' status page in headless Chromium and reads it, at
// 1280×800 and on a phone-sized screen, keeping a screenshot of each. Prints what
// the institutions table says as JSON on the last line. Run by
// tests/it/status_page.rs.
//
//   STATUS_URL=http://127.0.0.1:PORT/status CREDENTIAL=fsa_… SCREENSHOTS=dir \
//   CHROMIUM=/usr/bin/chromium NODE_PATH=node_modules node status.mjs
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const screenshots = process.env.SCREENSHOTS;
mkdirSync(screenshots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});

async function read(page) {
  return page.evaluate(() => ({
    institutions: [...document.querySelectorAll("tr[data-institution]")].map((row) => ({
      id: row.dataset.institution,
      health: row.querySelector("td").textContent.trim(),
      cells: [...row.querySelectorAll("td")].map((td) => td.textContent.trim()),
    })),
    failing: [...document.querySelectorAll("#failing + .scroll tbody tr")].map((row) => row.textContent.replace(/\s+/g, " ").trim()),
    widerThanScreen: document.documentElement.scrollWidth > window.innerWidth + 1,
    external: [...document.querySelectorAll("[src], link[href]")].length,
  }));
}

try {
  const wide = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await wide.newPage();
  await page.goto(process.env.STATUS_URL);
  await page.screenshot({ path: join(screenshots, "01-sign-in.png"), fullPage: true });
  await page.getByLabel("Credential").fill(process.env.CREDENTIAL);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "finsync fleet status" }).waitFor();
  await page.screenshot({ path: join(screenshots, "02-status-1280x800.png"), fullPage: true });
  const desktop = await read(page);

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await phone.addCookies(await wide.cookies());
  const small = await phone.newPage();
  await small.goto(process.env.STATUS_URL);
  await small.getByRole("heading", { name: "finsync fleet status" }).waitFor();
  await small.screenshot({ path: join(screenshots, "03-status-phone.png"), fullPage: true });
  const mobile = await read(small);
  console.log(JSON.stringify({ desktop, mobile }));
} catch (error) {
  console.error(error.stack ?? error);
  process.exitCode = 1;
} finally {
  await browser.close();
}
