# Command-line flags of the bench scripts, sourced by them: --flag=value,
# or --flag alone for "1". `flags` names the known flags with their
# defaults (character); an unknown flag or --help prints `usage` and quits.
bench_args <- function(usage, flags) {
  a <- commandArgs(trailingOnly = TRUE)
  bad <- setdiff(sub("^--([^=]*).*$", "\\1", a), c(names(flags), "help"))
  if (length(bad) || "--help" %in% a) {
    cat(usage, "\n")
    quit(status = if (length(bad)) 2L else 0L)
  }
  out <- lapply(names(flags), function(f) {
    hit <- grep(paste0("^--", f, "(=|$)"), a, value = TRUE)
    if (!length(hit)) return(flags[[f]])
    v <- sub(paste0("^--", f, "=?"), "", hit[length(hit)])
    if (nzchar(v)) v else "1"
  })
  stats::setNames(out, names(flags))
}
