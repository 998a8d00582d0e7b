# Zero inflation (svi_fit(..., ziformula = )): the likelihood against a
# direct computation, its gradients against finite differences, the fits
# against glmmTMB (simulated data, where the posterior is close to the
# likelihood) and NUTS (Salamanders), and the methods.

zi_sim <- function(family, n = 2000, J = 40, seed = 1) {
  set.seed(seed)
  g <- factor(sample(J, n, TRUE))
  x <- rnorm(n)
  w <- rnorm(n)
  mu <- exp(0.5 + 0.4 * x + rnorm(J, sd = 0.5)[g])
  y <- if (family == "poisson") rpois(n, mu) else rnbinom(n, size = 2, mu = mu)
  y[runif(n) < plogis(-0.5 + 0.8 * w)] <- 0
  data.frame(y = y, x = x, w = w, g = g)
}

zi_families <- list(poisson = poisson(), negbin = negbin())

test_that("the zero-inflated log-likelihood is the mixture's, computed directly", {
  d <- zi_sim("negbin", n = 200, J = 8, seed = 2)
  for (fam in names(zi_families)) {
    b <- svir:::svir_build_spec(y ~ x + (1 | g), d, family = zi_families[[fam]], ziformula = ~w)
    sp <- b$spec
    lay <- b$info$layout
    set.seed(3)
    theta <- rnorm(length(sp$prior_type), sd = 0.4)
    z <- list(matrix(rnorm(nlevels(d$g)), ncol = 1))
    got <- .Call(svir:::C_svir_logdensity_r, sp, theta, z)$loglik
    beta <- theta[lay$class == "b"]
    gam <- theta[lay$class == "zi"]
    sd_g <- exp(theta[lay$class == "sd"])
    eta <- drop(sp$X %*% beta) + sd_g * z[[1]][as.integer(d$g), 1]
    pz <- plogis(drop(sp$Xz %*% gam))
    f <- if (fam == "poisson") dpois(d$y, exp(eta)) else
      dnbinom(d$y, size = exp(theta[lay$class == "phi"]), mu = exp(eta))
    ref <- sum(log(ifelse(d$y == 0, pz + (1 - pz) * f, (1 - pz) * f)))
    # the engine's log-likelihood leaves out the family's constant -log y!
    expect_equal(got - sum(lgamma(d$y + 1)), ref, tolerance = 1e-10)
  }
})

for (fam in names(zi_families)) {
  d <- zi_sim(fam, n = 60, J = 6, seed = 4)
  for (zf in list(~1, ~w)) {
    spec <- svir:::svir_build_spec(y ~ x + (x | g), d, family = zi_families[[fam]],
                                   ziformula = zf)$spec
    # random intercepts alone take the engine's specialised loops
    spec_int <- svir:::svir_build_spec(y ~ x + (1 | g), d, family = zi_families[[fam]],
                                       ziformula = zf)$spec
    for (guide in c("meanfield", "fullrank")) for (bs in list(NULL, 10L)) {
      lab <- paste(fam, deparse(zf), guide, if (is.null(bs)) "full batch" else "minibatch")
      test_that(paste("zero-inflated ELBO gradient matches finite differences:", lab), {
        for (sp in list(spec, spec_int)) {
          r <- elbo_grad_check(sp, guide, bs)
          expect_true(all(is.finite(r$grad)))
          expect_lt(r$err, 1e-6)
        }
      })
    }
    test_that(paste("zero-inflated log joint: gradient and blocked draws:", fam, deparse(zf)), {
      D <- length(spec$prior_type)
      set.seed(5)
      theta <- rnorm(D, sd = 0.3)
      z <- list(matrix(rnorm(6 * 2), 6))
      r <- .Call(svir:::C_svir_logdensity_r, spec, theta, z)
      num <- fd_grad(function(v) .Call(svir:::C_svir_logdensity_r, spec, v, z)$logp, theta)
      expect_lt(max(abs(num - r$grad_theta)) / max(1, abs(num)), 1e-6)
      # the same log-likelihood from the blocked loop of the draws (PSIS)
      k <- 11
      th <- matrix(rnorm(D * k, sd = 0.3), D)
      zz <- list(array(rnorm(6 * 2 * k), c(6, 2, k)))
      ref <- vapply(seq_len(k), function(s) {
        .Call(svir:::C_svir_logdensity_r, spec, th[, s], list(zz[[1]][, , s]))$loglik
      }, numeric(1))
      expect_equal(.Call(svir:::C_svir_loglik_block_r, spec, th, zz), ref, tolerance = 1e-12)
    })
  }
}

# glmmTMB's estimates and standard errors, cond then zi
tmb_ref <- function(d, fam, zf) {
  ref <- glmmTMB::glmmTMB(y ~ x + (1 | g), ziformula = zf, data = d,
                          family = if (fam == "poisson") poisson else glmmTMB::nbinom2)
  list(est = c(glmmTMB::fixef(ref)$cond, glmmTMB::fixef(ref)$zi),
       se = c(sqrt(diag(vcov(ref)$cond)), sqrt(diag(vcov(ref)$zi))))
}
zi_est <- function(fit) c(fixef(fit), fixef(fit, component = "zi"))

test_that("zero-inflated fits agree with glmmTMB (SVI, minibatch SVI, QEM)", {
  skip_if_not_installed("glmmTMB")
  for (fam in names(zi_families)) {
    d <- zi_sim(fam)
    for (zf in list(~1, ~w)) {
      ref <- tmb_ref(d, fam, zf)
      fit <- svi_fit(y ~ x + (1 | g), d, family = zi_families[[fam]], ziformula = zf, seed = 2)
      expect_lt(max(abs(zi_est(fit) - ref$est) / ref$se), 0.5)
      fit_fr <- svi_fit(y ~ x + (1 | g), d, family = zi_families[[fam]], ziformula = zf,
                        guide = "fullrank", seed = 2)
      expect_lt(max(abs(zi_est(fit_fr) - ref$est) / ref$se), 0.5)
      # minibatches of 200 rows: noisier, still within most of one SE
      fit_mb <- svi_fit(y ~ x + (1 | g), d, family = zi_families[[fam]], ziformula = zf,
                        seed = 2, control = svi_control(batch_size = 200))
      expect_lt(max(abs(zi_est(fit_mb) - ref$est) / ref$se), 0.75)
    }
  }
  # QEM on a third of the rows (its step is dearer)
  for (fam in names(zi_families)) {
    d <- zi_sim(fam, n = 700, J = 20, seed = 6)
    ref <- tmb_ref(d, fam, ~w)
    fit <- svi_fit(y ~ x + (1 | g), d, family = zi_families[[fam]], ziformula = ~w,
                   method = "qem", seed = 2)
    expect_equal(fit$method, "qem")
    expect_lt(max(abs(zi_est(fit) - ref$est) / ref$se), 0.75)
  }
})

test_that("Salamanders: the zero-inflated NB fit agrees with NUTS", {
  skip_if_not_installed("glmmTMB")
  # NUTS on the same model and priors (bench/zi.R --fixture: rstan, 4
  # chains x 4000 iterations). glmmTMB's maximum likelihood is not the
  # reference here: the exact posterior mean itself lies 0.55 to 1.2 of
  # glmmTMB's standard errors from it (bench/README.md), as the posterior of
  # the zero inflation has a long tail towards pi = 0.
  nuts <- readRDS(test_path("fixtures", "salamanders-zinb-nuts.rds"))
  data("Salamanders", package = "glmmTMB", envir = environment())
  fit <- svi_fit(count ~ mined + (1 | site), Salamanders, family = negbin(),
                 ziformula = ~mined, guide = "fullrank", seed = 3)
  est <- zi_est(fit)
  expect_named(est, c("(Intercept)", "minedno", "(Intercept)", "minedno"))
  expect_lt(max(abs(est - nuts$mean) / nuts$sd), 0.5)
  # the zero inflation's tails inflate NUTS's sds (1.25 and 1.98); against
  # NUTS's medians on the scale of its interquartile ranges (0.58 and 1.45
  # for the zi coefficients) the full-rank fit is within 0.2 for seeds 1-5
  robust_sd <- (nuts$q75 - nuts$q25) / (2 * stats::qnorm(0.75))
  expect_lt(max(abs(est - nuts$median) / robust_sd), 0.3)
  # the mean-field guide ignores the correlations: its count model still
  # agrees, its zero inflation less closely (its optimum puts the slope
  # about 0.4 NUTS sd off, bench/README.md)
  mf <- svi_fit(count ~ mined + (1 | site), Salamanders, family = negbin(),
                ziformula = ~mined, seed = 3)
  expect_lt(max(abs(fixef(mf) - nuts$mean[1:2]) / nuts$sd[1:2]), 0.5)
})

test_that("predict() and fitted() include the zero inflation; simulate() draws it", {
  d <- zi_sim("poisson", n = 600, J = 15, seed = 7)
  fit <- svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~w, seed = 1)
  pz <- predict(fit, type = "zprob")
  mu <- predict(fit, type = "conditional")
  expect_equal(unname(pz), unname(plogis(drop(cbind(1, d$w) %*% fixef(fit, "zi")))),
               tolerance = 1e-12)
  expect_equal(unname(mu), unname(exp(predict(fit, type = "link"))), tolerance = 1e-12)
  expect_equal(predict(fit, type = "response"), (1 - pz) * mu, tolerance = 1e-12)
  expect_equal(fitted(fit), predict(fit, type = "response"), tolerance = 1e-12)
  expect_equal(residuals(fit), d$y - fitted(fit), tolerance = 1e-12, ignore_attr = TRUE)
  nd <- d[1:5, ]
  expect_equal(predict(fit, newdata = nd, type = "response"),
               predict(fit, type = "response")[1:5], tolerance = 1e-12, ignore_attr = TRUE)
  pi_int <- predict(fit, newdata = nd, type = "zprob", interval = TRUE)
  expect_true(all(pi_int[, "lwr"] <= pi_int[, "fit"] & pi_int[, "fit"] <= pi_int[, "upr"]))
  expect_true(all(pi_int[, "lwr"] > 0 & pi_int[, "upr"] < 1))
  # simulated zeros: structural ones plus Poisson's; the mean share over
  # 200 replicates near the fitted model's, far above the Poisson's alone
  sims <- simulate(fit, nsim = 200, seed = 1)
  share <- mean(colMeans(sims == 0))
  expected <- mean(pz + (1 - pz) * exp(-mu))
  expect_lt(abs(share - expected), 0.02)
  expect_gt(share - mean(exp(-mu)), 0.2)
  expect_lt(abs(share - mean(d$y == 0)), 0.03)
  # the summary, print and vcov name the zero-inflation part
  expect_output(print(fit), "Zero-inflation")
  expect_output(print(summary(fit)), "Zero-inflation model")
  expect_equal(dim(vcov(fit, component = "zi")), c(2L, 2L))
  expect_true(all(c("zi_(Intercept)", "zi_w") %in% colnames(as.matrix(fit))))
})

test_that("ziformula = ~0 fits no zero inflation; bad ziformula is a clear error", {
  d <- zi_sim("poisson", n = 300, J = 10, seed = 8)
  a <- svi_fit(y ~ x + (1 | g), d, family = poisson(), seed = 4)
  b <- svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~0, seed = 4)
  expect_identical(fixef(a), fixef(b))
  expect_null(b$zi)
  expect_equal(unname(predict(a, type = "zprob")), rep(0, nrow(d)))
  expect_error(svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~ w + (1 | g)),
               "fixed effects only", class = "svir_error")
  expect_error(svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = y ~ w),
               "one-sided", class = "svir_error")
  expect_error(svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = "~1"),
               "one-sided", class = "svir_error")
  d$yb <- as.integer(d$y > 0)
  expect_error(svi_fit(yb ~ x + (1 | g), d, family = binomial(), ziformula = ~1),
               "poisson", class = "svir_error")
  expect_error(svi_fit(y ~ x + (1 | g), d, family = gaussian(), ziformula = ~1),
               "poisson", class = "svir_error")
  expect_error(svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~ nothere),
               "nothere", class = "svir_error")
  # the device code has no zero inflation: refused whether or not a GPU is here
  expect_error(svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~1,
                       backend = "cuda"), "Zero inflation runs on the CPU only", class = "svir_error")
  Y <- matrix(rpois(40, 3), 10)
  expect_error(svi_fit(Y ~ 1, data.frame(i = 1:10), family = pln(), ziformula = ~1),
               "GLMMs", class = "svir_error")
  expect_error(residuals(svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~1, seed = 1),
                         type = "deviance"), "zero-inflated", class = "svir_error")
})

test_that("zero-inflated fits reproduce, and agree across thread counts", {
  d <- zi_sim("negbin", n = 800, J = 20, seed = 9)
  run <- function(threads) {
    suppressWarnings(svi_fit(y ~ x + (1 | g), d, family = negbin(), ziformula = ~w, seed = 5,
                             control = svi_control(threads = threads, max_steps = 300)))
  }
  a <- run(2)
  expect_identical(a$engine$vpar, run(2)$engine$vpar)
  # one and two threads sum in a different order: the last bits may differ
  expect_equal(a$engine$vpar, run(1)$engine$vpar, tolerance = 1e-6)
})

test_that("svi_prior(zi = ) sets the zero inflation's priors", {
  d <- zi_sim("poisson", n = 300, J = 10, seed = 10)
  b <- svir:::svir_build_spec(y ~ x + (1 | g), d, family = poisson(), ziformula = ~w,
                              prior = svi_prior(zi = list(w = normal(1, 0.5))))
  tab <- b$info$prior
  expect_identical(tab$prior[tab$class == "zi"], c("student_t(3, 0, 2.5)", "normal(1, 0.5)"))
  expect_identical(tab$source[tab$class == "zi"], c("default", "user"))
  # a prior of the internal (scaled) coefficient: sd 0.5 times w's sd
  row <- which(b$info$layout$class == "zi" & b$info$layout$coef == "w")
  expect_equal(b$spec$prior_scale[row], 0.5 * sd(d$w), tolerance = 1e-12)
  expect_error(svi_prior(zi = half_normal(1)), "zi", class = "svir_error")
  expect_error(svir:::svir_build_spec(y ~ x + (1 | g), d, family = poisson(), ziformula = ~w,
                                      prior = svi_prior(zi = list(nothere = normal(0, 1)))),
               "nothere")
  expect_warning(svir:::svir_build_spec(y ~ x + (1 | g), d, family = poisson(),
                                        prior = svi_prior(zi = normal(0, 1))),
                 "not used", class = "svir_warning")
})
