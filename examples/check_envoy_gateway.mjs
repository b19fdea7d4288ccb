// Checks examples/envoy-gateway/security-policy.yaml against the Envoy Gateway and Gateway API
// schemas; run by .ci/run.
//
// Each YAML document is built with the model class of its apiVersion/kind from
// @kubernetes-models/envoy-gateway (SecurityPolicy) or @kubernetes-models/gateway-api
// (ReferenceGrant), generated from the Go API types the CRDs are generated from, and checked
// with the model's validate() (ajv: types, enums, required fields, formats, bounds).
//
// Unknown fields: the models' schemas carry no `additionalProperties: false` and the models
// have no strict mode, so validate() accepts a misspelt field. This script does not catch one
// either: beyond the schemas, only the values it asserts below are pinned by name.
//
// node examples/check_envoy_gateway.mjs [file]. The modules are imported by path from
// .ci/node/node_modules, where .ci/run installs them pinned (ES modules ignore NODE_PATH).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const modules = join(root, ".ci", "node", "node_modules");
const load = (name) => import(pathToFileURL(join(modules, name)).href);

const { parseAllDocuments } = await load("yaml/dist/index.js");
const envoyGateway = await load(
  "@kubernetes-models/envoy-gateway/gateway.envoyproxy.io/v1alpha1/index.js",
);
const gatewayApi = await load(
  "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1beta1/index.js",
);

const models = {
  "gateway.envoyproxy.io/v1alpha1": envoyGateway,
  "gateway.networking.k8s.io/v1beta1": gatewayApi,
};

const path = process.argv[2] ?? join(root, "examples", "envoy-gateway", "security-policy.yaml");
let failed = false;
const fail = (message) => {
  console.error(`${path}: ${message}`);
  failed = true;
};

const kinds = [];
for (const document of parseAllDocuments(readFileSync(path, "utf8"))) {
  if (document.errors.length > 0) {
    fail(`yaml: ${document.errors.map(String).join("; ")}`);
    continue;
  }
  const data = document.toJS();
  const Model = models[data.apiVersion]?.[data.kind];
  if (Model === undefined) {
    fail(`no model for ${data.apiVersion} ${data.kind}`);
    continue;
  }
  kinds.push(data.kind);
  try {
    new Model(data).validate();
  } catch (error) {
    fail(`${data.kind} ${data.metadata?.name}: ${error.message}`);
    continue;
  }
  if (data.kind === "SecurityPolicy") {
    // Fail closed, over gRPC to Tessera's Service (TESSERA_LISTEN's port in the chart).
    const extAuth = data.spec.extAuth;
    if (extAuth?.failOpen !== false) fail("SecurityPolicy extAuth.failOpen must be false");
    const backend = extAuth?.grpc?.backendRefs?.[0];
    if (backend?.name !== "tessera" || backend?.port !== 50051) {
      fail("SecurityPolicy extAuth.grpc.backendRefs[0] must be tessera:50051");
    }
  }
}
if (kinds.join() !== "SecurityPolicy,ReferenceGrant") {
  fail(`expected SecurityPolicy then ReferenceGrant, got ${kinds.join(", ") || "nothing"}`);
}
if (failed) process.exit(1);
console.log("envoy gateway example: ok");
