# Sending SIGINT to a fit in a child R process: the interrupt test in
# test-fuzz.R and bench/interrupt.R use these.

# Runs `code` (which must define go(), a long fit) in a child R process,
# sends SIGINT `wait` seconds after the fit enters the engine (svir_run()
# says START just before it calls C, so the signal lands in C, not in
# svi_fit()'s R code, which any R code would stop for), and returns the
# seconds from the signal to the end of the call and the child's output.
# The child catches the interrupt, then fits again (the engine must be
# usable) and says ALIVE.
interrupt_child <- function(code, wait = 1.5, lib = dirname(find.package("svir"))) {
  script <- tempfile(fileext = ".R")
  writeLines(c(sprintf('.libPaths(c("%s", .libPaths()))', lib),
               "suppressMessages(library(svir))",
               code,
               'trace("svir_run", where = asNamespace("svir"), print = FALSE,',
               '      tracer = quote(cat("START", format(Sys.time(), "%OS3"), "\\n")))',
               'r <- tryCatch({ go(); "RETURNED" }, interrupt = function(e) "INTERRUPTED")',
               'cat("RESULT", r, format(Sys.time(), "%OS3"), "\\n")',
               'f <- svi_fit(Reaction ~ Days, lme4::sleepstudy, seed = 1)',
               'if (all(is.finite(fixef(f)))) cat("ALIVE\\n")'), script)
  # the whole process tree is killed at the end: a child whose fit ignored
  # the signal must not go on running (and using the cores) after the test
  p <- processx::process$new(file.path(R.home("bin"), "Rscript"), script, stdout = "|",
                             stderr = "2>&1", cleanup_tree = TRUE)
  on.exit(p$kill_tree(), add = TRUE)
  out <- ""
  t_end <- Sys.time() + 120
  while (!grepl("START", out) && p$is_alive() && Sys.time() < t_end) {
    p$poll_io(200)
    out <- paste0(out, p$read_output())
  }
  Sys.sleep(wait)
  t0 <- Sys.time()
  p$interrupt()
  while (p$is_alive() && !grepl("RESULT", out) && Sys.time() < t0 + 60) {
    p$poll_io(20)
    out <- paste0(out, p$read_output())
  }
  dt <- as.numeric(Sys.time() - t0, units = "secs")
  p$wait(60000)
  out <- paste0(out, p$read_all_output())
  list(seconds = dt, output = out, status = p$get_exit_status())
}

# The long fits of the interrupt test and of bench/interrupt.R, one per
# engine: GLMM SVI and QEM (K = 64; n = 4e5, 4000 groups), and pln() full,
# PLN-PCA of rank 5, rank 5 with residual variances, minibatch and QEM
# (n = 20000, p = 300).
interrupt_cases <- function() {
  glmm_data <- paste(
    "set.seed(1); n <- 4e5; g <- factor(sample(4000, n, TRUE)); x <- rnorm(n)",
    "d <- data.frame(y = rpois(n, exp(0.5 + 0.3 * x)), x = x, g = g)", sep = "\n")
  pln_data <- "set.seed(1); Y <- matrix(rpois(20000 * 300, 2), 20000, 300)"
  long <- "control = svi_control(max_steps = 1e6, tol_rel_obj = 1e-12, lr_schedule = \"constant\", progress = FALSE)"
  cases <- list(
    glmm_svi = c(glmm_data, sprintf("go <- function() svi_fit(y ~ x + (x | g), d, family = poisson(), seed = 1, %s)", long)),
    glmm_qem = c(glmm_data, sprintf("go <- function() svi_fit(y ~ x + (x | g), d, family = poisson(), method = \"qem\", seed = 1, control = svi_control(K = 64, max_steps = 1e6, tol_rel_obj = 1e-12, progress = FALSE))")),
    pln_full = c(pln_data, "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1)"),
    pln_pca = c(pln_data, "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(rank = 5), seed = 1)"),
    pln_rank = c(pln_data, "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(rank = 5, residual = TRUE), seed = 1)"),
    pln_minibatch = c(pln_data, "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1, control = svi_control(batch_size = 500))"),
    pln_qem = c(pln_data, "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(rank = 5, residual = TRUE), method = \"qem\", seed = 1)"))
  cases
}
