# Small fits of every kind under valgrind: the memory check to run before
# an issue that touches src/ is resolved (issue 15). From the repository
# root, with svir installed into LIB:
#
#   R_LIBS=LIB R -d "valgrind --error-exitcode=1 --leak-check=full \
#     --errors-for-leak-kinds=definite" --vanilla -f dev/valgrind.R
#
# A clean run ends with "ERROR SUMMARY: 0 errors" and "definitely lost: 0
# bytes" (R itself holds some memory until exit: "still reachable" and
# "possibly lost" are R's). The fits are small, since valgrind runs about
# 50 times slower; each kind of fit goes through its own engine: GLMM SVI
# (mean-field, full-rank, minibatches, zero inflation, prior weights,
# separated data), the GLMM's Laplace sampler (gaussian, crossed,
# binomial, negative binomial, observation-level effect), GLMM QEM, and pln() full, diagonal, rank (factor
# model), PLN-PCA (dense; sparse in blocks of 7 rows), minibatch (full,
# rank, sparse diagonal; the VE step its verbs run), sparse and QEM, the
# BLAS pieces (tiny pieces: full, rank, minibatch), a quasi-separated GLMM
# (its grid posterior), then methods that call C (ranef, predict
# intervals, pln_loglik). An error in a fit is caught and printed, so that the run
# reaches every case.
suppressMessages(library(svir))
ctl <- svi_control(max_steps = 200, ndraws = 50, progress = FALSE)
run <- function(label, expr) {
  r <- tryCatch({ suppressWarnings(force(expr)); "ok" },
                error = function(e) paste("error:", conditionMessage(e)))
  cat(sprintf("%-28s %s\n", label, r))
}
d <- lme4::sleepstudy[1:60, ]
run("glmm meanfield", svi_fit(Reaction ~ Days + (Days | Subject), d, seed = 1, control = ctl,
                              method = "svi"))
run("glmm fullrank", svi_fit(Reaction ~ Days + (Days | Subject), d, seed = 1, control = ctl,
                             guide = "fullrank"))
# the Laplace sampler (method = "auto" picks it for these): a correlated
# term, crossed factors, binomial, negative binomial, and an
# observation-level effect (its fallback to the Laplace marginal's weights)
ctl_l <- svi_control(ndraws = 50, is_draws = 200, progress = FALSE)
run("glmm laplace", svi_fit(Reaction ~ Days + (Days | Subject), d, seed = 1, control = ctl_l))
run("glmm laplace crossed", svi_fit(diameter ~ 1 + (1 | plate) + (1 | sample),
                                    lme4::Penicillin[1:60, ], seed = 1, control = ctl_l))
run("glmm laplace binomial", svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd),
                                     lme4::cbpp, family = binomial(), seed = 1, control = ctl_l))
gt <- lme4::grouseticks[seq(1, 403, by = 5), ]
run("glmm laplace olre", svi_fit(TICKS ~ YEAR + (1 | LOCATION) + (1 | INDEX), gt,
                                 family = poisson(), seed = 1, control = ctl_l))
ctl_mb <- svi_control(max_steps = 200, ndraws = 50, batch_size = 20, progress = FALSE)
run("glmm minibatch", svi_fit(Reaction ~ Days + (1 | Subject), d, seed = 1, control = ctl_mb))
s <- glmmTMB::Salamanders[1:150, ]
run("glmm zinb", svi_fit(count ~ mined + (1 | site), s, family = negbin(), ziformula = ~mined,
                         seed = 1, control = ctl))
run("glmm laplace negbin", svi_fit(count ~ mined + (1 | site), s, family = negbin(), seed = 1,
                                   control = ctl_l))
run("glmm weights", svi_fit(count ~ mined + (1 | site), s, family = poisson(),
                            weights = rep(1:2, 75), seed = 1, control = ctl))
sep <- data.frame(x = seq(-1, 1, length.out = 40), g = factor(rep(1:4, 10)))
sep$y <- as.integer(sep$x > 0)
run("glmm separation", svi_fit(y ~ x + (1 | g), sep, family = binomial(), seed = 1,
                               control = ctl))
ctl_q <- svi_control(max_steps = 30, ndraws = 50, K = 4, progress = FALSE)
run("glmm qem", svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp,
                        family = binomial(), method = "qem", seed = 1, control = ctl_q))
set.seed(1)
pd <- data.frame(x = rnorm(40))
pd$Y <- matrix(rpois(40 * 5, exp(1 + 0.3 * pd$x)), 40)
ctl_p <- svi_control(max_steps = 20, progress = FALSE)
run("pln full", fp <- svi_fit(Y ~ x, pd, family = pln(), control = ctl_p))
run("pln diagonal", svi_fit(Y ~ x, pd, family = pln(covariance = "diagonal"), control = ctl_p))
run("pln rank (factor)", svi_fit(Y ~ x, pd, family = pln(rank = 2, residual = TRUE), control = ctl_p))
run("pln PCA", fpca <- svi_fit(Y ~ x, pd, family = pln(rank = 2), control = ctl_p))
run("pln PCA sparse, blocks", {
  ctl_b <- ctl_p
  ctl_b$pln_block <- 7L
  svi_fit(Matrix::Matrix(pd$Y, sparse = TRUE) ~ x, pd, family = pln(rank = 2), control = ctl_b)
})
ctl_pm <- svi_control(max_steps = 200, batch_size = 10, progress = FALSE)
run("pln minibatch", fmb <- svi_fit(Y ~ x, pd, family = pln(), control = ctl_pm, seed = 1))
Ysp <- Matrix::Matrix(pd$Y, sparse = TRUE)
run("pln minibatch rank, sparse", {
  svi_fit(Y ~ x, pd, family = pln(rank = 2, residual = TRUE), control = ctl_pm, seed = 1)
  svi_fit(Ysp ~ x, pd, family = pln(covariance = "diagonal"), control = ctl_pm, seed = 1)
})
run("minibatch fit's VE step", fitted(fmb))
run("pln sparse", svi_fit(Ysp ~ x, pd, family = pln(), control = ctl_p))
run("pln qem", svi_fit(Y ~ x, pd, family = pln(rank = 2, residual = TRUE), method = "qem", seed = 1,
                       control = svi_control(max_steps = 10, K = 4, progress = FALSE)))
# the BLAS work in pieces (src/models/pln/pln_blas.c), at pieces of 1000
# flops: products in 64-row pieces, Sigma's inverse blocked (p = 40)
pw <- data.frame(x = rnorm(70))
pw$Y <- matrix(rpois(70 * 40, 3), 70)
run("pln pieces: full, rank, mb", {
  old <- .Call(svir:::C_svir_pln_blas_flops_r, 1000)
  on.exit(.Call(svir:::C_svir_pln_blas_flops_r, old))
  svi_fit(Y ~ x, pw, family = pln(), control = ctl_p)
  svi_fit(Y ~ x, pw, family = pln(rank = 2, residual = TRUE), control = ctl_p)
  svi_fit(Y ~ x, pw, family = pln(), control = svi_control(max_steps = 14, batch_size = 35,
                                                            progress = FALSE), seed = 1)
})
# a separated coefficient's grid posterior (R/separation.R), quasi-separation
qd <- data.frame(f = factor(rep(c("a", "b", "c"), 20)), g = factor(rep(1:5, each = 12)))
qd$y <- rbinom(60, 1, 0.4)
qd$y[qd$f == "c"] <- 1L
run("glmm quasi-separation", svi_fit(y ~ f + (1 | g), qd, family = binomial(), seed = 1,
                                     control = ctl))
f <- suppressWarnings(svi_fit(Reaction ~ Days + (Days | Subject), d, seed = 1, control = ctl))
run("ranef, predict", {
  ranef(f)
  predict(f, data.frame(Days = 1, Subject = "new"), allow.new.levels = TRUE, interval = TRUE)
})
run("pln_loglik", pln_loglik(fp, nsamples = 20, seed = 1))
run("PCA VE step, loglik", {
  predict(fpca, newdata = pd[1:5, ], responses = pd$Y[1:5, ])
  pln_loglik(fpca, nsamples = 20, seed = 1)
})
# interrupted fits: a shell sends this process SIGINT while the fit runs
# (under valgrind a fit of this size takes minutes); nothing may leak
interrupted <- function(label, delay, expr) {
  system(sprintf("(sleep %d; kill -INT %d) &", delay, Sys.getpid()))
  t0 <- proc.time()[["elapsed"]]
  r <- tryCatch({ force(expr); "not interrupted (the fit ended first)" },
                interrupt = function(e) "interrupted")
  cat(sprintf("%-28s %s after %.1f s\n", label, r, proc.time()[["elapsed"]] - t0))
}
set.seed(2)
big <- data.frame(x = rnorm(20000), g = factor(sample(200, 20000, TRUE)))
big$y <- rpois(20000, exp(0.3 * big$x))
interrupted("glmm svi, interrupted", 20,
            svi_fit(y ~ x + (x | g), big, family = poisson(), seed = 1, method = "svi",
                    control = svi_control(max_steps = 1e5, progress = FALSE)))
interrupted("glmm laplace, interrupted", 20,
            svi_fit(y ~ x + (x | g), big, family = poisson(), seed = 1, method = "laplace",
                    control = svi_control(is_draws = 1e5, progress = FALSE)))
Yb <- matrix(rpois(2000 * 50, 2), 2000)
interrupted("pln full, interrupted", 20,
            svi_fit(Yb ~ 1, list(Yb = Yb), family = pln(), control = svi_control(progress = FALSE)))
