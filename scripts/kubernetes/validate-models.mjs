// Validates Kubernetes objects against the JSON schemas the npm
// kubernetes-models packages carry: the Kubernetes API's, cert-manager's
// and the Prometheus Operator's CRDs. Used by scripts/kubernetes/check.py.
//
//   node validate-models.mjs NODE_MODULES_DIR < objects.json
//
// Reads a JSON array of objects; prints a JSON array with, for each,
// {"model": "PACKAGE GROUP/VERSION KIND"} when valid, {"error": "..."}
// when not, or {"unknown": true} when no package has its kind.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const packages = [
  "kubernetes-models",
  "@kubernetes-models/cert-manager",
  "@kubernetes-models/prometheus-operator",
];

async function model(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  for (const pkg of packages) {
    const dir = group ? join(modules, pkg, group, version) : join(modules, pkg, version);
    const file = join(dir, `${kind}.js`);
    if (!existsSync(file)) continue;
    const mod = await import(pathToFileURL(file).href);
    if (mod[kind]) return { name: `${pkg} ${apiVersion} ${kind}`, Model: mod[kind] };
  }
  return null;
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const m = await model(String(obj.apiVersion), String(obj.kind));
  if (!m) {
    results.push({ unknown: true });
    continue;
  }
  try {
    new m.Model(obj).validate();
    results.push({ model: m.name });
  } catch (e) {
    results.push({ model: m.name, error: String(e.message || e).split("\n")[0] });
  }
}
process.stdout.write(JSON.stringify(results));
