//! `polyflow report`: the HTML page, written through links as `>` would.

use super::*;

/// `report`: the HTML page of the pipeline as `status` sees the store (nothing runs).
pub(super) fn cmd_report(a: HtmlReportArgs, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&a.common, reg)?;
    let sel = g.select(&[])?;
    let (store, _empty) = read_store(&a.common.store)?;
    let states = {
        let index = store.index_read()?;
        exec::assess::assess_all(&g, &sel, &store, &index, &env_of(&g, &a.common.backend), &|_| false)
    };
    let page = crate::report::render(
        &g,
        &sel,
        &states,
        &store,
        &spec::source::display_path(&a.common.file),
        &a.common.overrides(),
        &a.common.run_command(&[]),
    );
    if a.output == std::path::Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(page.as_bytes()).map_err(|e| CliError::Other(format!("error: stdout: {e}"), exit::STORE))?;
        return Ok(exit::OK);
    }
    super::out::write_through(&a.output, page.as_bytes())
        .map_err(|e| CliError::Other(format!("error: {}: {e}", a.output.display()), exit::STORE))?;
    crate::cli::out::errln!("{:>12} {}", "Wrote", spec::source::display_path(&a.output));
    Ok(exit::OK)
}
