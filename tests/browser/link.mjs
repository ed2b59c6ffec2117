// Plays an advisory app's user through the link flow in headless Chromium, on a
// phone-sized screen, with the keyboard where a user would use it: the example
// app, the link page's welcome, the institution picker (searched), the consent
// screen, the sandbox institution's own consent page, and back in the app.
// A screenshot of each step goes to SCREENSHOTS; the outcome is printed as JSON
// on the last line. Run by tests/it/browser.rs, which checks the rest.
//
//   EXAMPLE_URL=http://127.0.0.1:PORT/example-app/ SCREENSHOTS=dir \
//   CHROMIUM=/usr/bin/chromium NODE_PATH=node_modules node link.mjs
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const exampleUrl = process.env.EXAMPLE_URL;
const screenshots = process.env.SCREENSHOTS;
const user = process.env.LINK_USER ?? "ada";
// How long the app may take to show the first sync and its webhook once the user
// is back: generous, for shared machines.
const settleMs = Number(process.env.SETTLE_MS ?? 120_000);
mkdirSync(screenshots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const context = await browser.newContext({
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
});
const page = await context.newPage();
const steps = [];
let shot = 0;

async function step(name) {
  shot += 1;
  const file = join(screenshots, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  steps.push({ name, url: page.url(), title: await page.title() });
}

// What a link page must be on a phone: nothing wider than the screen, every
// field labelled, nothing fetched from elsewhere.
async function checkLinkPage(name) {
  const problems = await page.evaluate(() => {
    const found = [];
    if (document.documentElement.scrollWidth > window.innerWidth + 1) {
      found.push(`wider than the screen: ${document.documentElement.scrollWidth}px`);
    }
    for (const input of document.querySelectorAll("input:not([type=hidden])")) {
      if (input.labels.length === 0) found.push(`unlabelled input ${input.name}`);
    }
    for (const el of document.querySelectorAll("[src], link[href]")) {
      found.push(`loads ${el.getAttribute("src") ?? el.getAttribute("href")}`);
    }
    if (!document.documentElement.lang) found.push("no lang");
    return found;
  });
  if (problems.length > 0) {
    throw new Error(`${name}: ${problems.join("; ")}`);
  }
}

try {
  await page.goto(exampleUrl);
  await step("example-app");
  await page.getByLabel("Client id in this app").fill(user);
  await page.getByRole("button", { name: "Connect an account" }).click();

  await page.getByRole("heading", { name: "Connect your accounts" }).waitFor();
  await checkLinkPage("welcome");
  await step("link-welcome");
  await page.getByRole("button", { name: "Continue" }).click();

  await page.getByRole("heading", { name: "Choose your institution" }).waitFor();
  await checkLinkPage("picker");
  await step("link-picker");
  // Searching with the keyboard alone.
  await page.getByLabel("Search institutions").focus();
  await page.keyboard.type("meri");
  await Promise.all([page.waitForURL(/[?&]q=meri/), page.keyboard.press("Enter")]);
  await page.getByRole("link", { name: /Meridian Brokerage/ }).waitFor();
  await step("link-picker-searched");
  await page.getByRole("link", { name: /Meridian Brokerage/ }).click();

  await page.getByRole("heading", { name: "Connect Meridian Brokerage" }).waitFor();
  await checkLinkPage("consent");
  await step("link-consent");
  // Tab to the button that goes on, and press Enter.
  let reached = false;
  for (let i = 0; i < 20 && !reached; i += 1) {
    await page.keyboard.press("Tab");
    const focused = await page.evaluate(() => document.activeElement?.textContent?.trim());
    reached = focused === "Continue to Meridian Brokerage";
  }
  if (!reached) throw new Error("Tab never reached the Continue button");
  await Promise.all([page.waitForURL(/oauth\/authorize/), page.keyboard.press("Enter")]);

  // The sandbox institution's own consent page.
  await step("institution-consent");
  await page.getByRole("button", { name: "Approve" }).click();

  await page.waitForURL(/example-app\/return/);
  const returned = new URL(page.url());
  // The page refreshes itself while the first sync runs; webhooks arrive on their
  // own, so the page is read again until it shows both (or time is up).
  const deadline = Date.now() + settleMs;
  for (;;) {
    const shown = await page
      .evaluate(() => ({
        accounts: document.querySelectorAll("#accounts tbody tr").length,
        webhooks: document.querySelector("#webhooks")?.textContent ?? "",
      }))
      .catch(() => ({ accounts: 0, webhooks: "" })); // mid-refresh
    if (shown.accounts > 0 && shown.webhooks.includes("connection.linked")) break;
    if (Date.now() > deadline) {
      throw new Error(`no accounts or no connection.linked webhook on the app's page: ${shown.webhooks}`);
    }
    await page.waitForTimeout(500);
    await page.reload({ waitUntil: "load" }).catch(() => {}); // raced the page's own refresh
  }
  await step("back-in-the-app");
  const outcome = {
    link_session_id: returned.searchParams.get("link_session_id"),
    status: returned.searchParams.get("status"),
    connection_id: returned.searchParams.get("connection_id"),
    query_keys: [...returned.searchParams.keys()],
    shown_status: (await page.locator("#status").textContent())?.trim(),
    accounts: await page.locator("#accounts tbody tr").count(),
    webhooks: ((await page.locator("#webhooks").textContent()) ?? "").trim(),
    steps,
  };
  console.log(JSON.stringify(outcome));
} catch (error) {
  await page.screenshot({ path: join(screenshots, "failed.png"), fullPage: true }).catch(() => {});
  console.error(`at ${page.url()}: ${error.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
