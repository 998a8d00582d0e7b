# Result methods on fits made from a fake engine (helper-fake.R): shapes,
# names, lme4-compatible structures, predict() on new data.

ss <- lme4::sleepstudy
fit <- fake_fit()
mod <- attr(fit, "lme4")

# ---- transforms and post-processing ----------------------------------------------

test_that("svir_cpc_to_chol is Stan's cholesky_corr transform", {
  expect_equal(svir_cpc_to_chol(numeric(0), 1), matrix(1, 1, 1))
  y <- 0.7
  expect_equal(svir_cpc_to_chol(y, 2), matrix(c(1, tanh(y), 0, sqrt(1 - tanh(y)^2)), 2, 2))
  set.seed(1)
  for (q in 2:5) {
    y <- stats::rnorm(q * (q - 1) / 2)
    L <- svir_cpc_to_chol(y, q)
    expect_equal(L[upper.tri(L)], rep(0, sum(upper.tri(L))))
    expect_equal(diag(L %*% t(L)), rep(1, q))
    expect_equal(fake_chol_to_cpc(L), y)
  }
  # q = 3 by hand: row-major order (2,1), (3,1), (3,2)
  z <- tanh(c(0.2, -0.4, 0.9))
  L <- svir_cpc_to_chol(atanh(z), 3)
  expect_equal(L[3, 2], z[3] * sqrt(1 - z[2]^2))
  expect_equal(L[3, 3], sqrt(1 - z[2]^2 - L[3, 2]^2))
})

test_that("the fit has the fields of dev/ARCHITECTURE.md section 6", {
  expect_s3_class(fit, "svi_fit")
  fields <- c("call", "formula", "family", "method", "guide", "backend", "backend_reason",
              "frame", "na.action", "X", "y", "trials", "offset", "re", "scaling", "prior",
              "engine", "draws", "fixef", "ranef", "elbo", "steps", "stop_reason", "time",
              "khat", "seed", "control", "nobs")
  expect_true(all(fields %in% names(fit)))
  expect_identical(colnames(fit$draws),
                   c("(Intercept)", "Days", "sd_Subject__(Intercept)", "sd_Subject__Days",
                     "cor_Subject__(Intercept)__Days", "sigma"))
  expect_identical(colnames(fit$draws), fit$layout$draws_name)
  expect_equal(nrow(fit$draws), 1000L)
  expect_named(fit$fixef, c("mean", "vcov"))
  expect_identical(dimnames(fit$ranef$Subject$condval), list(levels(ss$Subject), c("(Intercept)", "Days")))
  expect_identical(dim(fit$ranef$Subject$condsd), c(18L, 2L))
})

test_that("the engine's time split is measured and adds up to less than its time", {
  fit <- svi_fit(Reaction ~ Days + (1 | Subject), ss, seed = 2, method = "svi")
  ts <- fit$time_split
  expect_named(ts, c("draw", "observations", "backward", "update", "posterior_draws"))
  expect_true(all(is.finite(ts) & ts >= 0))
  expect_gt(ts[["observations"]], 0)
  expect_gt(ts[["posterior_draws"]], 0)
  # the phases are disjoint parts of the engine call, which fit$time brackets
  expect_lte(sum(ts), fit$time + 0.01)
})

test_that("fixed effects are the exact affine image of q", {
  expect_equal(fixef(fit), lme4::fixef(mod))
  # full-rank guide built from lme4's covariance: the map back is exact
  fr <- fake_fit(guide = "fullrank")
  expect_equal(unname(vcov(fr)), unname(as.matrix(stats::vcov(mod))))
  expect_identical(dimnames(vcov(fr)), list(c("(Intercept)", "Days"), c("(Intercept)", "Days")))
  # the draws map with the same transform
  b <- fit$engine$draws[, 1:2] %*% t(fit$beta_map$T)
  b[, 1] <- b[, 1] + fit$scaling$y_center
  expect_equal(unname(fit$draws[, 1:2]), unname(b))
  expect_equal(colMeans(fit$draws[, 1:2]), fixef(fit), tolerance = 0.02)
})

test_that("scales and correlations map to natural units", {
  th <- fit$engine$draws
  ys <- fit$scaling$y_scale
  expect_equal(unname(fit$draws[, "sd_Subject__Days"]), exp(th[, 4]) * ys)
  expect_equal(unname(fit$draws[, "sigma"]), exp(th[, 6]) * ys)
  expect_equal(unname(fit$draws[, "cor_Subject__(Intercept)__Days"]), tanh(th[, 5]))
  expect_equal(sigma(fit), stats::sigma(mod), tolerance = 0.01)
})

test_that("random-effect moments follow the law of total variance", {
  set.seed(3)
  S <- 400; q <- 2; J <- 3
  A <- array(stats::rnorm(S * q * q, 1, 0.3), c(S, q, q))
  A[, 1, 2] <- 0
  m <- matrix(stats::rnorm(J * q), J, q)
  Cp <- matrix(stats::rnorm(J * 3, 0, 0.4), J, 3)
  mom <- svir_re_moments(m, Cp, A, full = TRUE)
  C <- svir_unpack_C(Cp, q)
  for (j in seq_len(J)) {
    V <- C[j, , ] %*% t(C[j, , ])
    mu_s <- t(apply(A, 1, function(a) a %*% m[j, ]))
    cov_s <- Reduce(`+`, lapply(seq_len(S), function(s) A[s, , ] %*% V %*% t(A[s, , ]))) / S
    tot <- cov_s + stats::cov(mu_s) * (S - 1) / S
    expect_equal(mom$mean[j, ], colMeans(mu_s))
    expect_equal(mom$cov[, , j], tot)
    expect_equal(mom$sd[j, ], sqrt(diag(tot)))
  }
  # random effects near lme4's conditional modes and sds (the fake's guide
  # is built from them; the posterior averages over the variance parameters)
  expect_equal(unname(fit$ranef$Subject$condval), unname(as.matrix(lme4::ranef(mod)$Subject)),
               tolerance = 0.05)
})

# ---- lme4-shaped results -------------------------------------------------------------

test_that("ranef() has lme4's shape", {
  r <- ranef(fit)
  rl <- lme4::ranef(mod)
  expect_s3_class(r, "ranef.svi_fit")
  expect_identical(names(r), names(rl))
  expect_identical(dimnames(r$Subject), dimnames(rl$Subject))
  expect_identical(dim(attr(r$Subject, "postVar")), dim(attr(rl$Subject, "postVar")))
  d <- as.data.frame(r)
  dl <- as.data.frame(rl)
  expect_identical(names(d), c("grpvar", "term", "grp", "condval", "condsd"))
  expect_identical(names(d), names(dl))
  expect_identical(lapply(d, class), lapply(dl, class))
  expect_identical(levels(d$term), levels(dl$term))
  expect_identical(as.character(d$grp), as.character(dl$grp))
  expect_equal(d$condsd, as.vector(fit$ranef$Subject$condsd))
  expect_null(attr(ranef(fit, condVar = FALSE)$Subject, "postVar"))
  expect_output(print(r), "with posterior variances")
})

test_that("terms sharing a grouping factor (||) are merged as lme4 does", {
  f2 <- fake_fit(Reaction ~ Days + (Days || Subject))
  m2 <- attr(f2, "lme4")
  r <- ranef(f2)
  rl <- lme4::ranef(m2)
  expect_identical(names(r), "Subject")
  expect_identical(colnames(r$Subject), colnames(rl$Subject))
  expect_type(attr(r$Subject, "postVar"), "list")
  expect_length(attr(r$Subject, "postVar"), 2L)
  d <- as.data.frame(r)
  dl <- as.data.frame(rl)
  expect_identical(names(d), names(dl))
  expect_identical(nrow(d), nrow(dl))
  expect_identical(as.character(d$term), as.character(dl$term))
  v <- VarCorr(f2)
  expect_identical(names(v), names(lme4::VarCorr(m2)))
  expect_identical(as.data.frame(v)[, 1:3], as.data.frame(lme4::VarCorr(m2))[, 1:3])
  expect_identical(colnames(f2$draws), c("(Intercept)", "Days", "sd_Subject__(Intercept)",
                                         "sd_Subject__Days", "sigma"))
})

test_that("VarCorr() has lme4's structure", {
  v <- VarCorr(fit)
  vl <- lme4::VarCorr(mod)
  expect_s3_class(v, "VarCorr.svi_fit")
  expect_identical(names(v), names(vl))
  expect_identical(dimnames(v$Subject), dimnames(vl$Subject))
  expect_identical(names(attr(v$Subject, "stddev")), names(attr(vl$Subject, "stddev")))
  expect_identical(dimnames(attr(v$Subject, "correlation")), dimnames(attr(vl$Subject, "correlation")))
  expect_true(attr(v, "useSc"))
  expect_equal(attr(v, "sc"), sigma(fit))
  expect_equal(unname(attr(v$Subject, "stddev")), unname(attr(vl$Subject, "stddev")), tolerance = 0.1)
  d <- as.data.frame(v)
  dl <- as.data.frame(vl)
  expect_identical(names(d), names(dl))
  expect_identical(d[, 1:3], dl[, 1:3])
  expect_identical(as.data.frame(v, order = "lower.tri")[, 1:3],
                   as.data.frame(vl, order = "lower.tri")[, 1:3])
  out <- capture.output(print(v))
  expect_match(out[1], "Groups +Name +Std.Dev. +Corr")
  expect_match(out[length(out)], "^ Residual")
})

test_that("coef() and fixef() have lme4's shape", {
  cf <- coef(fit)
  cl <- stats::coef(mod)
  expect_s3_class(cf, "coef.svi_fit")
  expect_identical(names(cf), names(cl))
  expect_identical(dimnames(cf$Subject), dimnames(cl$Subject))
  expect_equal(cf$Subject$Days, fixef(fit)[["Days"]] + fit$ranef$Subject$condval[, "Days"],
               ignore_attr = TRUE)
  expect_named(fixef(fit), c("(Intercept)", "Days"))
})

# ---- accessors ---------------------------------------------------------------------

test_that("accessors return what lme4's do", {
  expect_identical(nobs(fit), 180L)
  expect_equal(formula(fit), Reaction ~ Days + (Days | Subject), ignore_attr = TRUE)
  expect_identical(family(fit)$family, "gaussian")
  expect_identical(dim(model.frame(fit)), c(180L, 3L))
  expect_length(fitted(fit), 180L)
  expect_identical(names(fitted(fit)), rownames(ss))
  expect_equal(residuals(fit), ss$Reaction - fitted(fit), ignore_attr = TRUE)
  expect_equal(residuals(fit, "pearson"), residuals(fit) / sigma(fit))
  expect_equal(abs(residuals(fit, "deviance")), abs(residuals(fit)))
  expect_equal(fitted(fit), stats::fitted(mod), tolerance = 0.01)
})

test_that("summary() reports brms-style tables and the diagnostics", {
  s <- summary(fit)
  expect_s3_class(s, "summary.svi_fit")
  cols <- c("Estimate", "Est.Error", "Q2.5", "Q50", "Q97.5")
  expect_named(s$fixed, cols)
  expect_identical(rownames(s$fixed), c("(Intercept)", "Days"))
  expect_named(s$random, "Subject")
  expect_identical(rownames(s$random$Subject), c("sd(Intercept)", "sd(Days)", "cor(Intercept,Days)"))
  expect_named(s$random$Subject, cols)
  expect_identical(rownames(s$spec_pars), "sigma")
  expect_equal(s$fixed$Estimate, unname(fixef(fit)))
  expect_equal(s$fixed$Est.Error, unname(sqrt(diag(vcov(fit)))))
  expect_true(all(s$fixed$Q2.5 < s$fixed$Q50 & s$fixed$Q50 < s$fixed$Q97.5))
  # exact lognormal summaries agree with the draws
  expect_equal(s$random$Subject["sd(Days)", "Estimate"], mean(fit$draws[, "sd_Subject__Days"]),
               tolerance = 0.02)
  expect_named(summary(fit, prob = 0.9)$fixed, c("Estimate", "Est.Error", "Q5", "Q50", "Q95"))
  expect_error(summary(fit, prob = 2), class = "svir_error")
  out <- capture.output(print(s))
  expect_true(any(grepl("Number of obs: 180, groups:  Subject, 18", out, fixed = TRUE)))
  expect_true(any(grepl("^PSIS k-hat: .*good", out)))
  expect_true(any(grepl("^ELBO: ", out)))
  expect_true(any(grepl("converged after 1500 steps", out)))
})

test_that("print() is concise and complete", {
  out <- capture.output(print(fit))
  expect_true(any(grepl("Family: gaussian", out)))
  expect_true(any(grepl("guide: meanfield", out)))
  expect_true(any(grepl("backend: cpu", out)))
  expect_true(any(grepl("Number of obs: 180, groups:  Subject, 18", out, fixed = TRUE)))
  expect_true(any(grepl("Residual", out)))
  expect_true(any(grepl("Stopped: converged", out)))
})

test_that("a poor guide and missing log ratios are reported", {
  bad <- fake_fit(log_ratio_sd = 4)
  expect_gt(bad$khat, 0.7)
  expect_true(any(grepl("treat intervals as approximate", capture.output(print(summary(bad))))))
  info <- svir_build_spec(Reaction ~ Days + (Days | Subject), ss)$info
  eng <- fake_engine(info, mod)
  eng$log_ratio <- NULL
  f <- svir_postprocess(eng, info, call = NULL, control = list(), guide = "meanfield",
                        backend = "cpu", seed = 1)
  expect_true(is.na(f$khat))
  expect_match(attr(f$khat, "reason"), "no log importance ratios")
  expect_true(any(grepl("PSIS k-hat: not available", capture.output(print(summary(f))))))
})

# ---- predict -------------------------------------------------------------------------

test_that("predict() at the original data equals predict() without newdata", {
  expect_equal(predict(fit, newdata = ss), predict(fit))
  expect_equal(predict(fit, newdata = ss, re.form = NA), predict(fit, re.form = NA))
  expect_equal(predict(fit), fitted(fit))
  f4 <- fake_fit(Reaction ~ poly(Days, 2) + (1 | Subject))
  expect_equal(predict(f4, newdata = ss), predict(f4))
  # poly() uses the fit's coefficients on a subset of new data
  expect_equal(predict(f4, newdata = ss[c(5, 17, 33), ]), predict(f4)[c(5, 17, 33)])
  expect_equal(predict(f4, newdata = ss[1:10, ]), predict(attr(f4, "lme4"), newdata = ss[1:10, ]),
               tolerance = 1e-3)
})

test_that("re.form selects the random effects", {
  X <- model.matrix(~Days, ss)
  expect_equal(unname(predict(fit, re.form = NA)), unname(drop(X %*% fixef(fit))))
  expect_equal(predict(fit, re.form = ~0), predict(fit, re.form = NA))
  expect_equal(predict(fit, re.form = ~(Days | Subject)), predict(fit))
  expect_error(predict(fit, re.form = ~(1 | Other)), class = "svir_error")
  set.seed(1)
  d <- data.frame(a = factor(rep(1:6, each = 40)), b = factor(rep(1:4, 60)), x = stats::rnorm(240),
                  f = factor(sample(c("u", "v", "w"), 240, TRUE)))
  d$y <- 1 + d$x + stats::rnorm(6)[d$a] + stats::rnorm(24)[interaction(d$a, d$b)] + stats::rnorm(240)
  f5 <- fake_fit(y ~ x + f + (1 | a/b), data = d, data_name = quote(d))
  expect_identical(names(ranef(f5)), c("b:a", "a"))
  expect_equal(predict(f5, newdata = d), predict(f5))
  expect_equal(predict(f5, d[1:5, ], re.form = ~(1 | a)),
               predict(attr(f5, "lme4"), d[1:5, ], re.form = ~(1 | a)), tolerance = 1e-2)
  # a random slope on a factor (q = 3), new data with a subset of its levels
  f6 <- fake_fit(y ~ x + (f | a), data = d, data_name = quote(d))
  nd <- d[1:4, ]
  nd$f <- factor(c("u", "u", "v", "v"))
  same <- as.character(nd$f) == as.character(d$f[1:4])
  expect_equal(predict(f6, nd)[same], predict(f6)[1:4][same])
  expect_equal(predict(f6, nd), predict(attr(f6, "lme4"), nd), tolerance = 1e-2)
})

test_that("unknown levels are an error naming the level and allow.new.levels", {
  nd <- data.frame(Days = 1:2, Subject = c("308", "999"))
  expect_error(predict(fit, nd), "999", class = "svir_error")
  expect_error(predict(fit, nd), "allow.new.levels", class = "svir_error")
  p <- predict(fit, nd, allow.new.levels = TRUE)
  expect_equal(unname(p[2]), unname(fixef(fit)[1] + 2 * fixef(fit)[2]))
  expect_equal(unname(p[1]), unname(predict(fit, data.frame(Days = 1, Subject = "308"))))
  expect_error(predict(fit, data.frame(Days = 1)), "Subject", class = "svir_error")
})

test_that("intervals come from posterior draws", {
  set.seed(2)
  p <- predict(fit, ss[1:20, ], interval = TRUE)
  expect_true(is.matrix(p))
  expect_identical(colnames(p), c("fit", "lwr", "upr"))
  expect_equal(p[, "fit"], predict(fit, ss[1:20, ]))
  expect_true(all(p[, "lwr"] < p[, "fit"] & p[, "fit"] < p[, "upr"]))
  # population-level intervals match the exact normal interval of X beta
  p0 <- predict(fit, ss[1:3, ], re.form = NA, interval = TRUE)
  X <- model.matrix(~Days, ss[1:3, ])
  se <- sqrt(diag(X %*% vcov(fit) %*% t(X)))
  expect_equal(unname(p0[, "upr"] - p0[, "lwr"]), unname(2 * 1.959964 * se), tolerance = 0.1)
  # new levels: wider than an existing level
  pn <- predict(fit, data.frame(Days = 1, Subject = c("308", "new")), allow.new.levels = TRUE,
                interval = TRUE, ndraws = 500)
  expect_gt(pn[2, "upr"] - pn[2, "lwr"], pn[1, "upr"] - pn[1, "lwr"])
  expect_error(predict(fit, interval = TRUE, ndraws = 5000), class = "svir_error")
})

test_that("binomial, Poisson and negative binomial fits predict, simulate and summarise", {
  cb <- lme4::cbpp
  f3 <- fake_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cb,
                 family = binomial(), data_name = quote(cbpp))
  expect_equal(predict(f3, newdata = cb), predict(f3))
  pr <- predict(f3, type = "response", interval = TRUE)
  expect_true(all(pr >= 0 & pr <= 1))
  expect_equal(predict(f3, type = "response"), stats::predict(attr(f3, "lme4"), type = "response"),
               tolerance = 0.02)
  expect_equal(residuals(f3, "pearson"), stats::residuals(attr(f3, "lme4"), "pearson"), tolerance = 0.05)
  expect_equal(residuals(f3), cb$incidence / cb$size - fitted(f3), ignore_attr = TRUE)
  s <- simulate(f3, 4, seed = 1)
  expect_true(all(as.matrix(s) <= cb$size & as.matrix(s) >= 0))
  expect_identical(sigma(f3), 1)
  expect_false(attr(VarCorr(f3), "useSc"))
  expect_null(summary(f3)$spec_pars)

  set.seed(2)
  d <- data.frame(g = factor(rep(1:10, each = 20)), x = stats::rnorm(200))
  d$y <- stats::rnbinom(200, size = 2, mu = exp(1 + 0.5 * d$x + stats::rnorm(10, 0, 0.5)[d$g]))
  fn <- fake_fit(y ~ x + (1 | g), data = d, family = negbin(), data_name = quote(d))
  expect_identical(colnames(fn$draws), c("(Intercept)", "x", "sd_g__(Intercept)", "phi"))
  expect_equal(sigma(fn), lme4::getME(attr(fn, "lme4"), "glmer.nb.theta"), tolerance = 0.1)
  expect_identical(rownames(summary(fn)$spec_pars), "phi")
  expect_true(all(simulate(fn, 2, seed = 1) >= 0))

  g <- lme4::grouseticks
  fp <- fake_fit(TICKS ~ YEAR + offset(log(HEIGHT) / 100) + (1 | BROOD), data = g,
                 family = poisson(), data_name = quote(g))
  expect_equal(predict(fp, newdata = g), predict(fp))
  expect_equal(predict(fp, re.form = NA) - predict(fp, re.form = NA, newdata = transform(g, HEIGHT = 1)),
               log(g$HEIGHT) / 100, ignore_attr = TRUE)
})

# ---- simulate, draws, plot ---------------------------------------------------------------

test_that("simulate() returns stats::simulate's shape and honours seed", {
  s1 <- simulate(fit, nsim = 3, seed = 10)
  expect_s3_class(s1, "data.frame")
  expect_named(s1, c("sim_1", "sim_2", "sim_3"))
  expect_identical(nrow(s1), 180L)
  expect_false(is.null(attr(s1, "seed")))
  expect_identical(simulate(fit, nsim = 3, seed = 10), s1)
  set.seed(5)
  a <- stats::runif(1)
  set.seed(5)
  invisible(simulate(fit, 2, seed = 1))
  expect_identical(stats::runif(1), a)
  s_new <- simulate(fit, 2, seed = 1, re.form = NA)
  expect_identical(dim(s_new), c(180L, 2L))
  expect_equal(mean(as.matrix(s1)), mean(ss$Reaction), tolerance = 0.05)
})

test_that("posterior draws come out as matrix, data.frame and draws_df", {
  m <- as.matrix(fit)
  expect_identical(dim(m), c(1000L, 6L))
  expect_identical(colnames(as.data.frame(fit)), colnames(m))
  skip_if_not_installed("posterior")
  d <- posterior::as_draws_df(fit)
  expect_s3_class(d, "draws_df")
  expect_identical(posterior::variables(d), colnames(m))
})

test_that("plot() draws the ELBO trace", {
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_invisible(plot(fit))
  expect_invisible(plot(fit, window = 10, skip = 0))
})

test_that("rows dropped by na.exclude are padded with NA", {
  d <- ss
  d$Reaction[c(3, 10)] <- NA
  built <- svir_build_spec(Reaction ~ Days + (Days | Subject), d, na.action = na.exclude)
  m <- lme4::lmer(Reaction ~ Days + (Days | Subject), d, REML = FALSE, na.action = na.exclude)
  f <- svir_postprocess(fake_engine(built$info, m), built$info, call = NULL, control = list(),
                        guide = "meanfield", backend = "cpu", seed = 1)
  expect_identical(nobs(f), 178L)
  expect_length(fitted(f), 180L)
  expect_true(is.na(fitted(f)[3]))
  expect_length(residuals(f), 180L)
  expect_identical(dim(predict(f, interval = TRUE, ndraws = 50)), c(180L, 3L))
  expect_false(anyNA(predict(f, newdata = d)))
})
