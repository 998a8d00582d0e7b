# SVI's partial centring of one-column random-effect terms
# (svi_control(centre = ); back_q1_centred() in src/models/glmm/glmm_svi.c,
# svir_centring() in R/start.R; dev/CALIBRATION.md).

test_that("the ELBO gradient with centred terms matches finite differences", {
  for (fam in list(gaussian(), poisson(), binomial())) {
    d <- sim_glmm(fam$family, n_groups = 6, n_per = 8, crossed = 4, seed = 3)
    for (f in list(y ~ x1 + (1 | g) + (1 | h), y ~ x1 + (x1 | g) + (1 | h))) {
      sp <- svir:::svir_build_spec(f, d, family = fam)$spec
      sp$centre <- if (ncol(sp$terms[[1]]$Z) == 2) c(0, 0.7) else c(0.6, 1)
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

test_that("the engine refuses centring where it has no centred step", {
  d <- sim_glmm("poisson", n_groups = 6, n_per = 8, seed = 3)
  sp <- svir:::svir_build_spec(y ~ x1 + (x1 | g), d, family = poisson())$spec
  sp$centre <- 0.5
  expect_error(.Call(C_svir_fit_r, sp, list(method = "svi", max_steps = 5L)), "q = 1")
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
  expect_identical(cen(c ~ x + (x | g2), poisson()), 0)
  expect_identical(cen(c ~ x + (1 | g1) + (1 | g2), poisson(), "none"), c(0, 0))
  expect_identical(cen(c ~ x + (x | g1) + (1 | g2), poisson(), 0.5), c(0, 0.5))
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
  nd <- data.frame(Days = 0, Subject = "new")
  set.seed(1)
  pa <- as.matrix(predict(fa, nd, allow.new.levels = TRUE, interval = TRUE))
  set.seed(1)
  pn <- as.matrix(predict(fn, nd, allow.new.levels = TRUE, interval = TRUE))
  wa <- pa[1, ncol(pa)] - pa[1, ncol(pa) - 1L]
  wn <- pn[1, ncol(pn)] - pn[1, ncol(pn) - 1L]
  expect_equal(wa, wn, tolerance = 0.15)
  expect_gt(wa, 2 * 1.96 * 30) # sd(Subject) is about 38: the prior's spread
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
