# Agreement with lme4 and glmmTMB point estimates on their classic datasets.
# Posterior means and (RE)ML estimates differ by a fraction of a standard
# error; the tolerances are in the reference's standard errors.

test_that("sleepstudy: svi_fit agrees with lmer", {
  skip_if_not_installed("lme4")
  ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
  se <- sqrt(diag(as.matrix(vcov(ref))))
  for (guide in c("meanfield", "fullrank")) {
    fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy,
                   guide = guide, seed = 1)
    expect_lt(max(abs(fixef(fit) - lme4::fixef(ref)) / se), 0.5)
    sd_ref <- attr(lme4::VarCorr(ref)$Subject, "stddev")
    expect_lt(max(abs(attr(VarCorr(fit)$Subject, "stddev") / sd_ref - 1)), 0.25)
    expect_lt(abs(sigma(fit) / sigma(ref) - 1), 0.1)
    # conditional modes agree closely
    expect_gt(cor(ranef(fit)$Subject[, 2], lme4::ranef(ref)$Subject[, 2]), 0.95)
  }
})

test_that("cbpp: binomial svi_fit agrees with glmer", {
  skip_if_not_installed("lme4")
  f <- cbind(incidence, size - incidence) ~ period + (1 | herd)
  ref <- lme4::glmer(f, lme4::cbpp, family = binomial)
  se <- sqrt(diag(as.matrix(vcov(ref))))
  fit <- svi_fit(f, lme4::cbpp, family = binomial(), seed = 2)
  expect_lt(max(abs(fixef(fit) - lme4::fixef(ref)) / se), 0.5)
  sd_ref <- attr(lme4::VarCorr(ref)$herd, "stddev")
  expect_lt(abs(attr(VarCorr(fit)$herd, "stddev") / sd_ref - 1), 0.4)
})

test_that("Salamanders: negative binomial svi_fit agrees with glmmTMB", {
  skip_if_not_installed("glmmTMB")
  data("Salamanders", package = "glmmTMB", envir = environment())
  ref <- glmmTMB::glmmTMB(count ~ mined + (1 | site), Salamanders,
                          family = glmmTMB::nbinom2)
  b_ref <- glmmTMB::fixef(ref)$cond
  se <- sqrt(diag(vcov(ref)$cond))
  fit <- svi_fit(count ~ mined + (1 | site), Salamanders, family = negbin(), seed = 3)
  expect_lt(max(abs(fixef(fit) - b_ref) / se), 0.5)
  # dispersion: glmmTMB's sigma() is the NB2 size parameter, as svir's
  expect_lt(abs(log(sigma(fit) / sigma(ref))), log(1.3))
})
