#!/usr/bin/env Rscript
# Bit-for-bit regression check for refactors: fits a fixed list of models
# (every GLMM family and guide, minibatches, two threads, QEM, the kept
# path, ELBO gradients; every PLN mode, minibatches, QEM, the VE step) with
# fixed seeds and saves their numbers, then compares two such runs.
#
#   OPENBLAS_NUM_THREADS=1 Rscript dev/regress.R --lib=OLD --out=old.rds
#   OPENBLAS_NUM_THREADS=1 Rscript dev/regress.R --lib=NEW --out=new.rds
#   Rscript dev/regress.R --compare old.rds new.rds
#
# --compare prints, per case, "identical" or the largest relative
# difference of each differing element; exit status 1 when any differ.
args <- commandArgs(trailingOnly = TRUE)
get <- function(flag, default = "") {
  hit <- grep(paste0("^--", flag, "="), args, value = TRUE)
  if (length(hit)) sub(paste0("^--", flag, "="), "", hit[1]) else default
}

if (length(args) >= 1 && args[1] == "--compare") {
  a <- readRDS(args[2])
  b <- readRDS(args[3])
  skip <- if (length(args) >= 4) strsplit(args[4], ",")[[1]] else character()
  bad <- 0L
  reldiff <- function(x, y) {
    if (is.list(x)) {
      if (!is.list(y) || !identical(names(x), names(y))) return(Inf)
      return(max(c(0, mapply(reldiff, x, y))))
    }
    if (is.character(x) || is.logical(x)) return(if (identical(x, y)) 0 else Inf)
    if (length(x) != length(y)) return(Inf)
    if (identical(x, y)) return(0)
    d <- abs(as.double(x) - as.double(y)) / pmax(abs(as.double(x)), 1e-300)
    d[is.na(x) & is.na(y)] <- 0
    max(c(0, d), na.rm = FALSE)
  }
  # the engine list's order and its newer record-keeping fields do not count
  norm <- function(x) {
    if (is.list(x) && is.list(x$engine)) {
      e <- x$engine[setdiff(names(x$engine), c("seconds", "backend", "backend_reason"))]
      x$engine <- e[order(names(e))]
    }
    x
  }
  a <- lapply(a, norm)
  b <- lapply(b, norm)
  for (nm in union(names(a), names(b))) {
    if (!nm %in% names(a) || !nm %in% names(b)) {
      cat(sprintf("%-28s missing in one run\n", nm))
      bad <- bad + 1L
      next
    }
    x <- a[[nm]]
    y <- b[[nm]]
    if (identical(x, y)) {
      cat(sprintf("%-28s identical\n", nm))
      next
    }
    cat(sprintf("%-28s DIFFERS\n", nm))
    for (el in union(names(x), names(y))) {
      if (!identical(x[[el]], y[[el]])) {
        cat(sprintf("    %-20s max rel diff %.3g\n", el, reldiff(x[[el]], y[[el]])))
      }
    }
    if (!nm %in% skip) bad <- bad + 1L
  }
  quit(status = if (bad > 0) 1L else 0L)
}

lib <- get("lib")
out <- get("out", "regress.rds")
only <- get("only")
if (nzchar(lib)) .libPaths(c(normalizePath(lib), .libPaths()))
suppressPackageStartupMessages(library(svir))
cat("svir from", find.package("svir"), "\n")

one <- svi_control(threads = 1)
res <- list()
run <- function(name, expr) {
  if (nzchar(only) && !grepl(only, name)) return(invisible())
  t0 <- proc.time()[["elapsed"]]
  v <- tryCatch(expr, error = function(e) list(error = conditionMessage(e)))
  cat(sprintf("%-28s %6.2f s\n", name, proc.time()[["elapsed"]] - t0))
  res[[name]] <<- v
}
# the numbers of an svi_fit (no times)
glmm <- function(fit) {
  e <- fit$engine
  e$time <- e$time_split <- NULL
  list(engine = e, draws = unname(fit$draws), fixef = fit$fixef, ranef = fit$ranef,
       khat = fit$khat, steps = fit$steps, stop = fit$stop_reason)
}
pln_nums <- function(fit) {
  list(B = fit$coefficients, Sigma = fit$sigma, M = fit$M, S = fit$S, trace = fit$trace,
       elbo = fit$elbo, steps = fit$steps, epochs = fit$epochs, W = fit$loadings,
       psi = fit$psi, ess = fit$ess, stop = fit$stop_reason)
}

ss <- lme4::sleepstudy
cbpp <- lme4::cbpp
sal <- glmmTMB::Salamanders
set.seed(7)
n <- 6000
sim <- data.frame(x = rnorm(n), g = factor(sample(200, n, TRUE)), h = factor(sample(40, n, TRUE)))
sim$y <- rpois(n, exp(0.3 + 0.4 * sim$x + rnorm(200, sd = 0.5)[sim$g] + rnorm(40, sd = 0.3)[sim$h]))
sim$yg <- 1 + 0.5 * sim$x + rnorm(200, sd = 0.7)[sim$g] + rnorm(n)

run("sleep_mf", glmm(svi_fit(Reaction ~ Days + (Days | Subject), ss, seed = 1, control = one)))
run("sleep_fr", glmm(svi_fit(Reaction ~ Days + (Days | Subject), ss, seed = 2, guide = "fullrank",
                            control = one)))
run("sleep_uncor", glmm(svi_fit(Reaction ~ Days + (Days || Subject), ss, seed = 3, control = one)))
run("cbpp_logit", glmm(svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                              family = binomial(), seed = 1, control = one)))
run("cbpp_probit", glmm(svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                               family = binomial("probit"), seed = 1, control = one)))
run("cbpp_cloglog", glmm(svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                                family = binomial("cloglog"), seed = 1, control = one)))
run("sal_nb", glmm(svi_fit(count ~ mined + (1 | site), sal, family = negbin(), seed = 1,
                          control = one)))
run("sal_pois_fr", glmm(svi_fit(count ~ mined + spp + (1 | site), sal, family = poisson(),
                               guide = "fullrank", seed = 4, control = one)))
run("sim_crossed", glmm(svi_fit(y ~ x + (1 | g) + (1 | h), sim, family = poisson(), seed = 5,
                               control = one)))
run("sim_crossed_t2", glmm(svi_fit(y ~ x + (1 | g) + (1 | h), sim, family = poisson(), seed = 5,
                                  control = svi_control(threads = 2))))
run("sim_minibatch", glmm(svi_fit(yg ~ x + (1 | g) + (1 | h), sim, seed = 6,
                                 control = svi_control(threads = 1, batch_size = 500,
                                                       max_steps = 3000))))
run("sim_mb_slope", glmm(svi_fit(yg ~ x + (x | g), sim, seed = 6, guide = "fullrank",
                                control = svi_control(threads = 1, batch_size = 700,
                                                      max_steps = 2000))))
run("sleep_nostl_S3", glmm(svi_fit(Reaction ~ Days + (Days | Subject), ss, seed = 8,
                                  control = svi_control(threads = 1, stl = FALSE,
                                                        num_particles = 3))))
run("qem_cbpp", glmm(svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                            family = binomial(), method = "qem", seed = 1, control = one)))
run("qem_sleep", glmm(svi_fit(Reaction ~ Days + (Days | Subject), ss, method = "qem", seed = 2,
                             control = one)))
run("qem_sal_nb", glmm(svi_fit(count ~ mined + (1 | site), sal, family = negbin(), method = "qem",
                              seed = 3, control = one)))
run("qem_pois_fr", glmm(svi_fit(y ~ x + (1 | g), sim, family = poisson(), method = "qem",
                               guide = "fullrank", seed = 3, control = one)))
run("path_bound", {
  f <- svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
               family = binomial(), seed = 1, control = svi_control(threads = 1, keep_path = 50))
  b <- svir:::svir_path_bound(f, K = 8, reps = 3)
  b$time <- NULL
  b
})
run("elbo_grad", {
  b <- svir:::svir_build_spec(Reaction ~ Days + (Days | Subject), ss)
  spec <- b$spec
  D <- length(spec$prior_type)
  set.seed(3)
  v <- rnorm(2 * D + 18 * 5, sd = 0.3)
  ctrl <- list(guide = "meanfield", seed = 4, threads = 1L, num_particles = 2L, stl = 1L)
  .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, 7)
})

# ---- PLN
set.seed(11)
np_n <- 300
np_p <- 25
x <- rnorm(np_n)
W <- matrix(rnorm(np_p * 3, sd = 0.5), np_p)
Z <- cbind(1, x) %*% rbind(rnorm(np_p, 1, 0.5), rnorm(np_p, 0, 0.3)) +
  matrix(rnorm(np_n * 3), np_n) %*% t(W) + matrix(rnorm(np_n * np_p, sd = 0.4), np_n)
depth <- exp(rnorm(np_n, 0, 0.3))
Y <- matrix(rpois(np_n * np_p, depth * exp(Z)), np_n)
pd <- data.frame(x = x, depth = depth)
pd$Y <- Y
# the factor model with residual variances: pln(rank = q) before PLN-PCA
# became the rank model (issue 15), pln(rank = q, residual = TRUE) since
pln_fa <- function(q, ...) {
  if ("residual" %in% names(formals(pln))) pln(rank = q, residual = TRUE, ...) else pln(rank = q, ...)
}
Ysp <- Matrix::Matrix(Y, sparse = TRUE)
run("pln_full", pln_nums(svi_fit(Y ~ x + offset(log(depth)), pd, family = pln(), control = one)))
run("pln_diag", pln_nums(svi_fit(Y ~ x, pd, family = pln(covariance = "diagonal"), control = one)))
run("pln_sph", pln_nums(svi_fit(Y ~ x, pd, family = pln(covariance = "spherical"), control = one)))
run("pln_rank3", pln_nums(svi_fit(Y ~ x + offset(log(depth)), pd, family = pln_fa(3),
                                  control = one)))
run("pln_bayes", pln_nums(svi_fit(Y ~ x, pd, family = pln_fa(2, globals = "bayes"),
                                  control = one)))
run("pln_sparse", pln_nums(svi_fit(Ysp ~ x, pd, family = pln(covariance = "diagonal"),
                                   control = one)))
run("pln_mb_full", pln_nums(svi_fit(Y ~ x, pd, family = pln(), seed = 3,
                                    control = svi_control(threads = 1, batch_size = 60))))
run("pln_mb_rank", pln_nums(svi_fit(Y ~ x, pd, family = pln_fa(2), seed = 4,
                                    control = svi_control(threads = 1, batch_size = 100))))
run("pln_qem", pln_nums(svi_fit(Y ~ x, pd, family = pln_fa(2), method = "qem", seed = 5,
                                control = svi_control(threads = 1, max_steps = 60))))
run("pln_ve", {
  f <- svi_fit(Y ~ x, pd, family = pln_fa(3), control = one)
  predict(f, newdata = pd[1:20, ], responses = Y[1:20, ])
})
run("pln_ve_full", {
  f <- svi_fit(Y ~ x, pd, family = pln(), control = one)
  predict(f, newdata = pd[1:20, ], responses = Y[1:20, ])
})
saveRDS(res, out)
cat("saved", length(res), "cases to", out, "\n")
