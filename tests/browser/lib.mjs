// Shared by the console's browser tests (tests/api/console/browser.rs runs them): Debian's
// chromium driven by playwright-core, imported by path from .ci/node/node_modules, where
// .ci/run installs it pinned (ES modules ignore NODE_PATH).
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(join(root, ".ci", "node", "node_modules", "noop.js"));
const { chromium } = require("playwright-core");

/** Fails the run with `message` unless `condition` holds. */
export function expect(condition, message) {
  if (!condition) {
    throw new Error(`expectation failed: ${message}`);
  }
}

/** A setting the Rust test passes in the environment. */
export function need(name) {
  const value = process.env[name];
  expect(value, `environment ${name} is set`);
  return value;
}

export const env = {
  base: need("TESSERA_HTTP_URL"),
  screenshots: need("TESSERA_SCREENSHOTS"),
  chromium: process.env.TESSERA_CHROMIUM || "/usr/bin/chromium",
};

/** Chromium with the flags these machines need, a 1280×900 page, clipboard allowed. */
export async function launch() {
  const browser = await chromium.launch({
    executablePath: env.chromium,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: env.base });
  const page = await context.newPage();
  // Generous: under the whole suite on a 2-core machine a page can take seconds to answer; a
  // missing element still fails the run, and the step's elapsed time is in the log.
  page.setDefaultTimeout(30_000);
  // A page that logs an error (a CSP violation, a failed script) fails the run.
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  page.on("pageerror", (error) => problems.push(String(error)));
  return { browser, context, page, problems };
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust test to do something outside the browser and waits for its JSON answer. */
export async function ask(request) {
  process.stdout.write(`ASK ${JSON.stringify(request)}\n`);
  const { value, done } = await lines.next();
  expect(!done, "the test answers");
  return JSON.parse(value);
}

/** A full-page screenshot into the screenshots directory, `mask` (secrets) blacked out. */
export async function screenshot(page, name, mask = []) {
  await page.screenshot({ path: join(env.screenshots, `${name}.png`), fullPage: true, mask, maskColor: "#50575f" });
}

/** Runs `steps`, printing each; exits non-zero with the error on failure. */
export async function run(steps) {
  const session = await launch();
  try {
    for (const [name, step] of steps) {
      process.stderr.write(`step: ${name}\n`);
      const started = Date.now();
      await step(session);
      process.stderr.write(`  took ${Date.now() - started} ms\n`);
      expect(session.problems.length === 0, `no page errors after "${name}": ${session.problems}`);
    }
    process.stdout.write("DONE\n");
  } catch (error) {
    process.stderr.write(`${error.stack || error}\n`);
    try {
      await screenshot(session.page, "failure");
    } catch {}
    process.exitCode = 1;
  } finally {
    await session.browser.close();
    process.stdin.destroy();
  }
}

/** Reads a shown-once secret from the field `selector`: its Copy button, the clipboard, and
 * the live region that says so. */
export async function copySecret(page, selector) {
  const shown = await page.locator(selector).inputValue();
  expect(shown.length > 20, `a secret is shown (${shown.length} characters)`);
  await page.getByRole("button", { name: "Copy" }).first().click();
  await page.getByText("Copied to the clipboard.").waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied === shown, "the clipboard holds the secret shown");
  return copied;
}

/** Goes to `url`, again when a navigation still under way (Chromium landing on an error page
 * after a back) interrupts it. */
export async function gotoSettled(page, url) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await page.goto(url);
    } catch (error) {
      const interrupted = /interrupted by another navigation|ERR_ABORTED|frame was detached/.test(String(error));
      if (!interrupted || attempt === 5) throw error;
      process.stderr.write(`  goto ${url} interrupted (${error.message.split("\n")[0]}); again\n`);
      await page.waitForTimeout(250);
    }
  }
}

/** Reloads the usage page until its first figure reads `expected` (usage is flushed in the
 * background), for at most 30 seconds; returns what it read last. */
export async function waitForCalls(page, expected) {
  const deadline = Date.now() + 30_000;
  let calls = await page.locator(".stat .value").first().innerText();
  while (calls !== expected && Date.now() < deadline) {
    await page.waitForTimeout(250);
    await page.reload();
    calls = await page.locator(".stat .value").first().innerText();
  }
  return calls;
}
