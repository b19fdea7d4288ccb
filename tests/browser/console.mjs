// The operator console in a real browser (run by tests/api/console/browser.rs): sign in, create
// a token and copy its secret, see it is not shown again, Check it (asked of the Rust test) and
// see the usage appear, rotate, revoke. Screenshots of the main pages, secrets masked.
import { ask, copySecret, env, expect, gotoSettled, need, run, screenshot, waitForCalls } from "./lib.mjs";

const adminKey = need("TESSERA_ADMIN_KEY");
const name = "browser-token";
let secret = "";
let tokenPage = "";

await run([
  ["sign in with the admin key", async ({ page }) => {
    await page.goto(`${env.base}/console/`);
    expect(page.url().endsWith("/console/sign-in"), `redirected to sign-in: ${page.url()}`);
    await screenshot(page, "console-sign-in");
    await page.getByLabel("Admin key").fill(adminKey);
    await page.getByLabel("Your name (optional, for the audit log)").fill("Browser Test");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await screenshot(page, "console-overview");
  }],
  ["create a token and copy its secret", async ({ page }) => {
    await page.getByRole("link", { name: "Tokens", exact: true }).first().click();
    await page.getByRole("link", { name: "Create token" }).click();
    await page.getByLabel("Name").fill(name);
    await page.getByLabel("Owner (principal id)").fill("alice");
    await page.getByLabel("Permissions (one per line)").fill("orders:read\norders:write");
    await page.getByRole("button", { name: "Create token" }).click();
    await page.getByRole("heading", { name: "Token secret" }).waitFor();
    secret = await copySecret(page, "#token-secret");
    await screenshot(page, "console-token-created", [page.locator("input[readonly]")]);
  }],
  ["the secret is not shown again after a reload", async ({ page }) => {
    await page.getByRole("link", { name: "Go to the token's page" }).click();
    tokenPage = page.url();
    await page.reload();
    await page.getByRole("heading", { name: `Token ${name}` }).waitFor();
    expect(!(await page.content()).includes(secret), "the token's page never holds the secret");
    // Back to the page that showed it: answered no-store, so the browser keeps no copy to show
    // (Chromium says ERR_CACHE_MISS rather than resend the form by itself).
    const back = await page.goBack().then(() => "", (error) => String(error));
    expect(
      back.includes("ERR_CACHE_MISS") || !(await page.content()).includes(secret),
      `going back does not show the secret again (${back})`,
    );
    // Chromium may still be moving to its error page, which would interrupt a plain goto.
    await gotoSettled(page, tokenPage);
  }],
  ["a Check with the copied secret is allowed and its usage appears", async ({ page }) => {
    const checked = await ask({ check: secret, permission: "orders:read" });
    expect(checked.allowed === true, `allowed: ${JSON.stringify(checked)}`);
    await page.goto(tokenPage);
    await page.getByRole("link", { name: "Usage of this token" }).click();
    const calls = await waitForCalls(page, "1");
    expect(calls === "1", `the usage page counts the call (saw ${calls})`);
    await page.getByRole("heading", { name: "Calls per day" }).waitFor();
    expect((await page.locator("figure svg").count()) >= 1, "a chart is drawn");
    await screenshot(page, "console-usage");
  }],
  ["rotate: a new secret, the old one refused", async ({ page }) => {
    await page.goto(tokenPage);
    await page.getByRole("button", { name: "Rotate secret" }).click();
    await page.getByRole("heading", { name: "Token secret" }).waitFor();
    const rotated = await copySecret(page, "#token-secret");
    expect(rotated !== secret, "rotation shows a different secret");
    const old = await ask({ check: secret });
    expect(old.allowed === false, "the old secret is refused after a rotation without grace");
    const fresh = await ask({ check: rotated });
    expect(fresh.allowed === true, "the new secret is allowed");
    secret = rotated;
  }],
  ["revoke after typing the name", async ({ page }) => {
    await page.goto(tokenPage);
    const revoke = page.getByRole("button", { name: "Revoke token" });
    expect(await revoke.isDisabled(), "revoke waits for the typed name");
    await page.getByLabel(/Type the token's name/).fill(name);
    await revoke.click();
    await page.locator(".badge.revoked").first().waitFor();
    const after = await ask({ check: secret });
    expect(after.allowed === false, "a revoked token is refused");
    await page.getByRole("link", { name: "Tokens", exact: true }).first().click();
    await page.getByLabel("Include revoked").check();
    await page.getByRole("button", { name: "Filter" }).click();
    await screenshot(page, "console-tokens");
  }],
  ["the audit log names the console user", async ({ page }) => {
    await page.getByRole("link", { name: "Audit log" }).click();
    await page.getByText("console:Browser Test").first().waitFor();
    await screenshot(page, "console-audit");
  }],
]);
