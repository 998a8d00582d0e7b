# Runs svir's testthat suite and ends with one line: "N passed, N failed".
#
# Usage, from the package root:  Rscript .ci/test.R
# The package is installed from a freshly built source tarball into a
# temporary library (so the tests see what a user installs, compiled with
# R's usual flags), unless SVIR_TEST_LIB names a library that already holds
# svir (the CI script passes the one R CMD check installed).
# Exit status: 0 when nothing failed, 1 otherwise.

local({
  if (!file.exists("DESCRIPTION") || !dir.exists("tests/testthat")) {
    stop("run this from the svir package root: Rscript .ci/test.R", call. = FALSE)
  }
  lib <- Sys.getenv("SVIR_TEST_LIB")
  if (!nzchar(lib) || !dir.exists(file.path(lib, "svir"))) {
    lib <- tempfile("svir-lib")
    bld <- tempfile("svir-build")
    dir.create(lib)
    dir.create(bld)
    r <- file.path(R.home("bin"), "R")
    root <- normalizePath(".")
    owd <- setwd(bld)
    st <- system2(r, c("CMD", "build", "--no-build-vignettes", "--no-manual",
                       shQuote(root)))
    tgz <- list.files(bld, "^svir_.*[.]tar[.]gz$", full.names = TRUE)
    if (st != 0 || length(tgz) != 1L) stop("R CMD build failed", call. = FALSE)
    st <- system2(r, c("CMD", "INSTALL", "--no-docs", "--no-multiarch",
                       "-l", shQuote(lib), shQuote(tgz)))
    setwd(owd)
    if (st != 0) stop("R CMD INSTALL failed", call. = FALSE)
  }
  .libPaths(c(normalizePath(lib), .libPaths()))
})

# the slower checks that skip_on_cran() leaves out of R CMD check (the
# interrupt test's child processes) run here
Sys.setenv(NOT_CRAN = "true")
res <- tryCatch(
  testthat::test_dir(
    "tests/testthat",
    package = "svir",
    load_package = "installed",
    reporter = testthat::ProgressReporter$new(show_praise = FALSE),
    stop_on_failure = FALSE,
    stop_on_warning = FALSE
  ),
  error = function(e) {
    # the suite could not run at all (e.g. the package does not load)
    cat("\nthe test suite did not run:", conditionMessage(e), "\n")
    cat("0 passed, 1 failed\n")
    quit(save = "no", status = 1L)
  }
)

# count expectations the way the progress reporter does: an error inside a
# test counts as a failure
kinds <- unlist(lapply(res, function(t) {
  vapply(t$results, function(e) {
    if (inherits(e, "expectation_success")) "passed"
    else if (inherits(e, "expectation_failure") ||
             inherits(e, "expectation_error")) "failed"
    else if (inherits(e, "expectation_skip")) "skipped"
    else if (inherits(e, "expectation_warning")) "warnings"
    else "other"
  }, character(1))
}))
n <- function(k) sum(kinds == k)
df <- as.data.frame(res)
cat(sprintf("\n%d test blocks in %d files, %d skipped expectations, %d warnings, %.1f s\n",
            nrow(df), length(unique(df$file)), n("skipped"), n("warnings"),
            sum(df$real)))
cat(sprintf("%d passed, %d failed\n", n("passed"), n("failed")))
flush(stdout())
quit(save = "no", status = if (n("failed") > 0L) 1L else 0L)
