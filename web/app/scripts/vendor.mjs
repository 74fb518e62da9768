// The API reference pages (/docs, /redoc) load these from the app, never from a CDN.
import { copyFileSync, mkdirSync } from "node:fs";

const out = "../../src/treevu/webui/vendor";
mkdirSync(out, { recursive: true });
for (const [from, to] of [
  ["node_modules/swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-bundle.js"],
  ["node_modules/swagger-ui-dist/swagger-ui.css", "swagger-ui.css"],
  ["node_modules/redoc/bundles/redoc.standalone.js", "redoc.standalone.js"],
]) {
  copyFileSync(from, `${out}/${to}`);
}
