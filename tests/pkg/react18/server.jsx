import { renderToString } from "react-dom/server";
import { RunView } from "./run-view.jsx";

/** The whole page for `props`, server-rendered; client.js hydrates it with the same props. */
export function renderPage(props) {
  const html = renderToString(<RunView {...props} />);
  const json = JSON.stringify(props).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en">
  <head><meta charset="utf-8" /><title>runwire with React 18</title></head>
  <body>
    <div id="root">${html}</div>
    <script id="props" type="application/json">${json}</script>
    <script type="module" src="/client.js"></script>
  </body>
</html>`;
}
