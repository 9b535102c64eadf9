import "../shared/run-page.js";
