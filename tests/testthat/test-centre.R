# SVI's partial centring of random-effect terms (svi_control(centre = );
# back_q1_centred() and back_qn_centred() in src/models/glmm/glmm_svi.c,
# svir_centre_A() in src/models/glmm/glmm.c, svir_centring() in R/start.R;
# dev/CALIBRATION.md).

test_that("the ELBO gradient with centred terms matches finite differences", {
  for (fam in list(gaussian(), poisson(), binomial())) {
    d <- sim_glmm(fam$family, n_groups = 6, n_per = 8, crossed = 4, seed = 3)
    for (f in list(y ~ x1 + (1 | g) + (1 | h), y ~ x1 + (x1 | g) + (1 | h))) {
      sp <- svir:::svir_build_spec(f, d, family = fam)$spec
      # (x1 | g): A_eff = D^-lambda ((1 - lambda) A + lambda D), K = A^-1 A_eff
      sp$centre <- if (ncol(sp$terms[[1]]$Z) == 2) c(0.5, 0.7) else c(0.6, 1)
      for (guide in c("meanfield", "fullrank")) for (couple in 0:1) for (bs in list(NULL, 5L)) {
        ctrl <- list(guide = guide, seed = 7, threads = 1L, num_particles = 2L, stl = 0L,
                     couple = couple, batch_size = bs)
        v <- rand_vpar(sp, guide)
        fe <- function(v) .Call(C_svir_elbo_grad_r, sp, ctrl, v, 3)$elbo
        g <- .Call(C_svir_elbo_grad_r, sp, ctrl, v, 3)$grad
        expect_lt(max(abs(fd_grad(fe, v) - g)) / max(1, max(abs(g))), 1e-6,
                  label = paste(fam$family, deparse(f), guide, "couple", couple,
                                if (is.null(bs)) "full batch" else "minibatch"))
      }
    }
  }
})

# With stl the gradient in the local parameters is the path derivative
# (C^-T noise - K^T K (u - w) for a centred term with q > 1) and the one in
# theta takes the KL's parts at the draw; each differs from the gradient of
# the estimate by a term of mean zero, so the two must agree on average
# over draws. The global guide's sds are set tiny so that the differences
# are nearly linear in the local noise (with sds near 1, draws of K give
# them tails that no mean test can use). A 0.8 in front of the path
# derivative's K^T K (u - w) gave max |z| of 19.6 and 5.3; as built, 2.9.
test_that("stl's gradient with a centred term of several columns is unbiased", {
  d <- sim_glmm("binomial", n_groups = 6, n_per = 8, seed = 3)
  sp <- svir:::svir_build_spec(y ~ x1 + (x1 + x2 | g), d, family = binomial())$spec
  sp$centre <- 0.4
  Dg <- length(sp$prior_type)
  for (guide in c("meanfield", "fullrank")) {
    v <- rand_vpar(sp, guide)
    ngp <- if (guide == "fullrank") Dg + Dg * (Dg + 1) / 2 else 2 * Dg
    if (guide == "meanfield") {
      v[Dg + seq_len(Dg)] <- -8
    } else {
      for (r in seq_len(Dg)) for (c in seq_len(r)) v[Dg + r * (r - 1) / 2 + c] <- if (r == c) -8 else 0
    }
    D <- vapply(1:300, function(s) {
      c1 <- list(guide = guide, seed = s, threads = 1L, num_particles = 1L, stl = 1L, couple = 1L)
      .Call(C_svir_elbo_grad_r, sp, c1, v, 3)$grad -
        .Call(C_svir_elbo_grad_r, sp, modifyList(c1, list(stl = 0L)), v, 3)$grad
    }, numeric(length(v)))
    D <- D[-(Dg + seq_len(ngp - Dg)), ] # the theta means and the locals
    z <- rowMeans(D) / (apply(D, 1, sd) / sqrt(ncol(D)) + 1e-12)
    expect_lt(max(abs(z)), 4.5, label = guide)
  }
})

test_that("the engine refuses centring where it has no centred step", {
  d <- sim_glmm("poisson", n_groups = 6, n_per = 8, seed = 3)
  sp <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = poisson())$spec
  sp$centre <- 0.5
  expect_error(.Call(C_svir_fit_r, sp, list(method = "qem", max_steps = 5L)), "centre is for SVI")
  expect_error(svi_control(centre = 2), "centre", class = "svir_error")
  expect_error(svi_control(centre = "yes"), "centre", class = "svir_error")
})

test_that("the rule centres data-rich terms and leaves data-poor ones near 0", {
  set.seed(3)
  n <- 4000
  d <- data.frame(g1 = factor(sample.int(800, n, TRUE)), g2 = factor(sample.int(4, n, TRUE)),
                  x = rnorm(n))
  eta <- 0.3 * d$x + rnorm(800, 0, 0.5)[d$g1] + rnorm(4, 0, 0.3)[d$g2]
  d$y <- rbinom(n, 1, plogis(eta))
  d$c <- rpois(n, 3 * exp(eta))
  d$c0 <- rpois(n, 3) # no random effects: the moment estimate of the sds is 0
  cen <- function(f, fam, setting = "auto") {
    b <- svir:::svir_build_spec(f, d, family = fam)
    b$spec$init_mu <- svir:::svir_init_mu(b$spec, b$info)
    svir:::svir_centring(b$spec, b$info, setting)
  }
  # 5 binary rows per level of g1, 1000 per level of g2
  lb <- cen(y ~ x + (1 | g1) + (1 | g2), binomial())
  expect_lt(lb[1], 0.35)
  expect_gt(lb[2], 0.9)
  lc <- cen(c ~ x + (1 | g1) + (1 | g2), poisson())
  expect_gt(lc[1], 0.6) # 5 counts of mean about 3: 15 units of information
  expect_gt(lc[2], 0.98)
  expect_lt(max(cen(c0 ~ x + (1 | g1) + (1 | g2), poisson())), 0.3)
  # a factor nested in another: both stay non-centred
  d$g3 <- factor(paste(d$g2, sample.int(3, n, TRUE)))
  expect_identical(cen(c ~ x + (1 | g2) + (1 | g3), poisson()), c(0, 0))
  # a term with two columns: each column's share of a level's precision
  expect_gt(cen(c ~ x + (x | g2), poisson()), 0.95)
  expect_lt(cen(y ~ x + (x | g1), binomial()), 0.35)
  expect_identical(cen(c ~ x + (1 | g1) + (1 | g2), poisson(), "none"), c(0, 0))
  expect_identical(cen(c ~ x + (x | g1) + (1 | g2), poisson(), 0.5), c(0.5, 0.5))
})

# 10 levels of 1000 rows crossed with 2000 of 5 (test-window.R's data): the
# non-centred mean-field guide put sd(g2) at 0.281, 0.347 and 0.320 over
# seeds 1 to 3 (z up to 1.4 in lmer's yardstick sd / sqrt(2 J)); centred,
# 0.304 to 0.308 (bench/centre.R).
test_that("centring steadies a data-rich term's sd across seeds", {
  d <- sim_datarich_1e4()
  s <- vapply(1:3, function(seed) {
    f <- suppressWarnings(svi_fit(y ~ x + (1 | g1) + (1 | g2), d, method = "svi", seed = seed))
    expect_gt(f$centre[2], 0.95)
    expect_match(paste(capture.output(summary(f)), collapse = " "), "partially centred")
    as.data.frame(VarCorr(f))$sdcor[2]
  }, 0)
  expect_lt(diff(range(s)), 0.02)
  ref <- 0.265 # lmer's REML estimate on these data
  expect_lt(max(abs(s - ref) / (ref / sqrt(20))), 1)
})

test_that("a centred fit's ranef and predictions are on b's scale", {
  d <- lme4::sleepstudy
  fa <- svi_fit(Reaction ~ Days + (1 | Subject), d, method = "svi", seed = 1)
  fn <- svi_fit(Reaction ~ Days + (1 | Subject), d, method = "svi", seed = 1,
                control = svi_control(centre = "none"))
  expect_gt(fa$centre, 0.5)
  expect_identical(fn$centre, 0)
  # the effects agree within a fraction of their posterior sd
  ra <- ranef(fa)$Subject[, 1]
  rn <- ranef(fn)$Subject[, 1]
  expect_lt(max(abs(ra - rn)) / mean(attr(ranef(fn, condVar = TRUE)$Subject, "postVar")^0.5), 0.5)
  # a new level's effect is drawn from the prior N(0, sd^2) either way
  w <- new_level_width(list(fa, fn), data.frame(Days = 0, Subject = "new"))
  expect_equal(w[1], w[2], tolerance = 0.15)
  expect_gt(w[1], 2 * 1.96 * 30) # sd(Subject) is about 38: the prior's spread
  expect_output(print(summary(fn)), "centre = \"none\"", fixed = TRUE)
  # print() names the parameterisation that ran, as summary() does
  expect_output(print(fa), "partially centred, u = b / sd^(1 - lambda), lambda: Subject", fixed = TRUE)
  expect_output(print(fn), "random effects non-centred (z = b / sd; centre = \"none\")", fixed = TRUE)
})

# The ELBO the loop traces (glmm_estimate: the KL of a centred term at each
# draw of theta) and the log ratios of the posterior draws (glmm_draws.c:
# z = kap (u - w), log q(z | theta) = log q(u) - log kap) are two codes for
# one quantity; on Salamanders they agreed to 0.03 (se 0.02). The centred
# optimum was also the higher one (mean log ratio -1115.03 against -1115.84,
# bench/centre.R).
test_that("a centred fit's ELBO is what its draws' log ratios average", {
  s <- glmmTMB::Salamanders
  fa <- svi_fit(count ~ mined + (1 | site), s, family = poisson(), method = "svi", seed = 1,
                control = svi_control(ndraws = 4000))
  expect_gt(fa$centre, 0.8)
  lr <- fa$engine$log_ratio
  expect_lt(abs(mean(tail(fa$elbo, 100)) - mean(lr)), 4 * sd(lr) / sqrt(length(lr)) + 0.3)
  fn <- svi_fit(count ~ mined + (1 | site), s, family = poisson(), method = "svi", seed = 1,
                control = svi_control(ndraws = 4000, centre = "none"))
  expect_gt(mean(lr), mean(fn$engine$log_ratio))
})

# svi_control(centre = "learn"): each centred term's lambda takes a step per
# window on the ELBO's gradient (learn_centring() in glmm_svi.c)
test_that("the ELBO's gradient in lambda matches finite differences", {
  for (fam in list(gaussian(), poisson(), binomial())) {
    d <- sim_glmm(fam$family, n_groups = 6, n_per = 8, crossed = 4, seed = 3)
    sp <- svir:::svir_build_spec(y ~ x1 + (1 | g) + (1 | h), d, family = fam)$spec
    sp$centre <- c(0.6, 0.3)
    sp$centre_learn <- 1L
    for (guide in c("meanfield", "fullrank")) for (couple in 0:1) for (bs in list(NULL, 5L)) {
      ctrl <- list(guide = guide, seed = 7, threads = 1L, num_particles = 2L, stl = 0L,
                   couple = couple, batch_size = bs)
      v <- rand_vpar(sp, guide)
      g <- .Call(C_svir_elbo_grad_r, sp, ctrl, v, 3)$glam
      fd <- vapply(1:2, function(t) {
        s1 <- s2 <- sp
        s1$centre[t] <- s1$centre[t] + 1e-6
        s2$centre[t] <- s2$centre[t] - 1e-6
        (.Call(C_svir_elbo_grad_r, s1, ctrl, v, 3)$elbo -
           .Call(C_svir_elbo_grad_r, s2, ctrl, v, 3)$elbo) / 2e-6
      }, 0)
      expect_lt(max(abs(fd - g)) / max(1, abs(g)), 1e-6,
                label = paste(fam$family, guide, "couple", couple,
                              if (is.null(bs)) "full batch" else "minibatch"))
    }
    # without learning the engine reports no gradient in lambda
    sp$centre_learn <- NULL
    ctrl <- list(guide = "meanfield", seed = 7, threads = 1L, num_particles = 2L, stl = 0L)
    expect_identical(.Call(C_svir_elbo_grad_r, sp, ctrl, rand_vpar(sp, "meanfield"), 3)$glam,
                     c(0, 0))
  }
})

test_that("a learned centring moves lambda and keeps the fit where the rule puts it", {
  d <- sim_datarich_1e4()
  ref <- 0.265 # lmer's REML estimate (the test above)
  for (seed in 1:2) {
    f <- suppressWarnings(svi_fit(y ~ x + (1 | g1) + (1 | g2), d, method = "svi", seed = seed,
                                  control = svi_control(centre = "learn")))
    expect_identical(f$centre_start, c(0.315, 0.98))
    expect_true(all(f$centre > 0 & f$centre < 1))
    expect_gt(max(abs(f$centre - f$centre_start)), 0.01)
    expect_lt(abs(as.data.frame(VarCorr(f))$sdcor[2] - ref) / (ref / sqrt(20)), 1)
    expect_output(print(f), "learned by the ELBO's gradient", fixed = TRUE)
  }
  # the draws and the readers use the learned lambda: the same ELBO as the
  # draws' log ratios average, and the rule's effects
  s <- glmmTMB::Salamanders
  fl <- svi_fit(count ~ mined + (1 | site), s, family = poisson(), method = "svi", seed = 1,
                control = svi_control(ndraws = 4000, centre = "learn"))
  lr <- fl$engine$log_ratio
  expect_lt(abs(mean(tail(fl$elbo, 100)) - mean(lr)), 4 * sd(lr) / sqrt(length(lr)) + 0.3)
  fa <- svi_fit(count ~ mined + (1 | site), s, family = poisson(), method = "svi", seed = 1)
  sdb <- attr(ranef(fa, condVar = TRUE)$site, "postVar")^0.5
  expect_lt(max(abs(ranef(fl)$site[, 1] - ranef(fa)$site[, 1]) / sdb), 0.5)
  expect_error(svi_fit(count ~ mined + (1 | site), s, family = poisson(), method = "svi",
                       control = svi_control(centre = "learn", keep_path = 10)),
               "keep_path", class = "svir_error")
})

# A random slope with 1000 Poisson rows per level, (x | g), 50 levels: the
# non-centred mean-field guide put sd(Intercept) at 0.76 against glmer's
# 0.50 (z 5.4 in the yardstick sd / sqrt(2 J)) and full-rank at 0.63 (z
# 2.8); centred (lambda 0.999 by the rule), 0.517 for both (z 0.4).
test_that("centring a term of several columns fixes its data-rich sds", {
  set.seed(1)
  n <- 50000
  J <- 50
  g <- factor(sample.int(J, n, TRUE), levels = seq_len(J))
  x <- rnorm(n)
  b <- matrix(rnorm(2 * J), J) %*% chol(matrix(c(0.25, 0.045, 0.045, 0.09), 2))
  d <- data.frame(y = rpois(n, exp(0.3 + 0.5 * x + b[g, 1] + b[g, 2] * x)), x, g)
  # glmer's Laplace and its nAGQ = 0 agree to 0.001 here, in a tenth of the time
  ref <- as.data.frame(lme4::VarCorr(lme4::glmer(y ~ x + (x | g), d, family = poisson, nAGQ = 0)))
  ref <- ref$sdcor[is.na(ref$var2)]
  zs <- function(fit) {
    vc <- as.data.frame(VarCorr(fit))
    (vc$sdcor[is.na(vc$var2)] - ref) / (ref / sqrt(2 * J))
  }
  for (guide in c("meanfield", "fullrank")) {
    f <- svi_fit(y ~ x + (x | g), d, family = poisson(), method = "svi", guide = guide, seed = 1)
    expect_gt(f$centre, 0.99)
    expect_lt(max(abs(zs(f))), 2, label = guide)
  }
  # the non-centred guide (the only one before) fails the same yardstick
  fn <- svi_fit(y ~ x + (x | g), d, family = poisson(), method = "svi", guide = "meanfield", seed = 1,
                control = svi_control(centre = "none"))
  expect_gt(max(abs(zs(fn))), 3)
})

# sleepstudy's (Days | Subject) centred by the rule (lambda about 0.84):
# the mean-field ELBO rose from about -171.5 (non-centred) to -169.0 over
# three seeds, and the draws' log ratios (z = K (u - w), log q(z | theta) =
# log q(u) - log det K in glmm_draws.c) average to it.
test_that("a centred term of several columns: ELBO, draws, ranef and predictions agree", {
  d <- lme4::sleepstudy
  fa <- svi_fit(Reaction ~ Days + (Days | Subject), d, method = "svi", seed = 1,
                control = svi_control(ndraws = 4000))
  fn <- svi_fit(Reaction ~ Days + (Days | Subject), d, method = "svi", seed = 1,
                control = svi_control(ndraws = 4000, centre = "none"))
  expect_gt(fa$centre, 0.5)
  lr <- fa$engine$log_ratio
  expect_lt(abs(mean(tail(fa$elbo, 100)) - mean(lr)), 4 * sd(lr) / sqrt(length(lr)) + 0.3)
  expect_gt(mean(lr), mean(fn$engine$log_ratio))
  # the effects on b's scale: within a fraction of their posterior sd
  ra <- ranef(fa, condVar = TRUE)$Subject
  rn <- ranef(fn, condVar = TRUE)$Subject
  pv <- attr(rn, "postVar")
  sdn <- sqrt(rbind(pv[1, 1, ], pv[2, 2, ]))
  expect_lt(max(abs(as.matrix(ra) - as.matrix(rn)) / t(sdn)), 0.5)
  # a new level's effect is drawn from the prior N(0, Sigma) either way
  w <- new_level_width(list(fa, fn), data.frame(Days = 9, Subject = "new"))
  expect_equal(w[1], w[2], tolerance = 0.15)
  expect_gt(w[1], 2 * 1.96 * 40) # sd of Subject's effect at Days 9 is about 60
})

# The draws (glmm_draws.c) and the K-sample tree bound (glmm_tree.c) read a
# centred term of several columns through the draw's K = A^-1 A_eff; with a
# strong correlation K is far from diagonal. The ELBO is what the draws'
# log ratios average, and the tree bound with K = 1 is their mean too.
test_that("the draws and the tree bound follow a centred term of several columns", {
  set.seed(5)
  J <- 30
  d <- data.frame(g = factor(rep(seq_len(J), each = 20)), x = rnorm(20 * J))
  b <- matrix(rnorm(2 * J), J) %*% chol(matrix(c(0.25, 0.16, 0.16, 0.16), 2)) # cor 0.8
  d$y <- rpois(nrow(d), exp(1 + 0.3 * d$x + b[d$g, 1] + b[d$g, 2] * d$x))
  fs <- svi_fit(y ~ x + (x | g), d, family = poisson(), method = "svi", seed = 2,
                control = svi_control(keep_path = 50L, ndraws = 4000L, threads = 1L))
  expect_gt(fs$centre, 0.5)
  expect_gt(as.data.frame(VarCorr(fs))$sdcor[3], 0.5)
  lr <- fs$engine$log_ratio
  expect_lt(abs(mean(tail(fs$elbo, 100)) - mean(lr)), 4 * sd(lr) / sqrt(length(lr)) + 0.3)
  tb <- tree_bound_vs_draws(fs)
  expect_lt(abs(tb$bound - tb$draws), 4 * tb$se)
})

# The device has no centred step: a fit the rule would centre (a term with
# lambda above a half) leaves it under backend = "auto" and warns under
# backend = "cuda" (svir_centre_backend(); no device is needed to check the
# decision).
test_that("a fit with data-rich terms leaves the device, which has no centred step", {
  info <- list(re = list(list(grpvar = "g1"), list(grpvar = "g2")))
  dev <- list(backend = "cuda", reason = "large enough for the device")
  be <- svir:::svir_centre_backend(dev, "auto", c(0.3, 0.98), info)
  expect_identical(be$backend, "cpu")
  expect_match(be$reason, "the data-rich term g2 (lambda 0.98) needs one", fixed = TRUE)
  expect_identical(svir:::svir_centre_backend(dev, "auto", c(0.3, 0.4), info), dev)
  expect_warning(be <- svir:::svir_centre_backend(dev, "cuda", c(0.7, 0.98), info),
                 "g1 (lambda 0.70), g2 (lambda 0.98)", fixed = TRUE, class = "svir_warning")
  expect_identical(be, dev)
})
