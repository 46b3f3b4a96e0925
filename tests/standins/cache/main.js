// Runs ../standins.py cache-main (restore); inputs, outputs and state go through the runner's files.
const { spawnSync } = require("child_process");
const python = process.env.STANDIN_HOST_PYTHON;
const home = process.env.STANDIN_HOME;
if (!python || !home) {
  console.log("::error::STANDIN_HOST_PYTHON/STANDIN_HOME are not set: run through tests/integration/_act.py");
  process.exit(1);
}
const r = spawnSync(python, [home + "/standins.py", "cache-main"], { stdio: "inherit" });
process.exit(r.status === null ? 1 : r.status);
