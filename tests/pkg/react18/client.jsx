import { hydrateRoot } from "react-dom/client";
import { RunView } from "./run-view.jsx";

const props = JSON.parse(document.getElementById("props").textContent);
hydrateRoot(document.getElementById("root"), <RunView {...props} />);
