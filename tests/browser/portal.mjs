// The self-service portal in a real browser (run by tests/api/console/browser.rs): the one-time
// URL, create a token and copy its secret, see it is not shown again, Check it and see the
// usage, rotate, revoke; another principal's token is not reachable by id, and the URL works
// once. Screenshots of the main pages, secrets masked.
import { ask, copySecret, env, expect, launch, need, run, screenshot, waitForCalls } from "./lib.mjs";

const portalUrl = need("TESSERA_PORTAL_URL");
const otherToken = need("TESSERA_OTHER_TOKEN_ID");
const name = "deploy-key";
let secret = "";
let tokenPage = "";

await run([
  ["the one-time URL opens alice's tokens", async ({ page }) => {
    await page.goto(portalUrl);
    await page.waitForURL(`${env.base}/portal/`);
    await page.getByRole("heading", { name: "API tokens" }).waitFor();
    expect((await page.content()).includes("alice"), "the page names the principal");
  }],
  ["create a token within alice's permissions and copy its secret", async ({ page }) => {
    await page.getByRole("link", { name: "Create a token" }).click();
    await screenshot(page, "portal-create");
    await page.getByLabel("Name", { exact: true }).fill(name);
    await page.getByLabel("products:read").check();
    await page.getByRole("button", { name: "Create token" }).click();
    await page.getByRole("heading", { name: "Token created" }).waitFor();
    secret = await copySecret(page, "#secret");
    await screenshot(page, "portal-token-created", [page.locator("input[readonly]")]);
  }],
  ["the secret is not shown again after a reload", async ({ page }) => {
    await page.getByRole("link", { name: "Go to the token" }).click();
    tokenPage = page.url();
    await page.reload();
    await page.getByRole("heading", { name: `Token ${name}` }).waitFor();
    expect(!(await page.content()).includes(secret), "the token's page never holds the secret");
  }],
  ["a Check with the copied secret is allowed and its usage appears", async ({ page }) => {
    const checked = await ask({ check: secret, permission: "products:read" });
    expect(checked.allowed === true, `allowed: ${JSON.stringify(checked)}`);
    await page.goto(tokenPage);
    await page.locator("main").getByRole("link", { name: "Usage", exact: true }).click();
    const calls = await waitForCalls(page, "1");
    expect(calls === "1", `the usage page counts the call (saw ${calls})`);
    expect((await page.locator("figure svg").count()) >= 1, "a chart is drawn");
    await screenshot(page, "portal-usage");
  }],
  ["rotate: a new secret, the old one refused", async ({ page }) => {
    await page.goto(tokenPage);
    await page.locator("main").getByRole("link", { name: "Rotate", exact: true }).click();
    await page.getByRole("button", { name: "Rotate token" }).click();
    await page.getByRole("heading", { name: "Token rotated" }).waitFor();
    const rotated = await copySecret(page, "#secret");
    expect(rotated !== secret, "rotation shows a different secret");
    expect((await ask({ check: secret, permission: "products:read" })).allowed === false,
      "the old secret is refused after a rotation without grace");
    expect((await ask({ check: rotated, permission: "products:read" })).allowed === true,
      "the new secret is allowed");
    secret = rotated;
  }],
  ["another principal's token is not found by id", async ({ page, problems }) => {
    const response = await page.goto(`${env.base}/portal/tokens/${otherToken}`);
    expect(response.status() === 404, `bob's token is 404 (saw ${response.status()})`);
    await page.getByRole("heading", { name: "Token not found" }).waitFor();
    const rotate = await page.goto(`${env.base}/portal/tokens/${otherToken}/rotate`);
    expect(rotate.status() === 404, "and so is its rotate form");
    // Chromium logs each 404 document as an error: these two were the point of the step.
    expect(problems.every((problem) => problem.includes("status of 404")), `${problems}`);
    problems.splice(0);
  }],
  ["revoke after typing the name", async ({ page }) => {
    await page.goto(tokenPage);
    await page.locator("main").getByRole("link", { name: "Revoke", exact: true }).click();
    const revoke = page.getByRole("button", { name: "Revoke token" });
    expect(await revoke.isDisabled(), "revoke waits for the typed name");
    await page.getByLabel(/Type the token's name/).fill(name);
    await revoke.click();
    await page.waitForURL(/\/portal\/\?notice=revoked/);
    expect((await ask({ check: secret, permission: "products:read" })).allowed === false,
      "a revoked token is refused");
    await page.getByRole("link", { name: "Show revoked tokens" }).click();
    await screenshot(page, "portal-tokens");
  }],
  ["the one-time URL does not work twice", async () => {
    const second = await launch();
    try {
      const response = await second.page.goto(portalUrl);
      expect(response.status() === 401, `a second use is refused (saw ${response.status()})`);
      await second.page.getByRole("heading", { name: "This link has expired" }).waitFor();
    } finally {
      await second.browser.close();
    }
  }],
]);
