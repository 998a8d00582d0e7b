# Priors: constructors, validation, defaults, the prior table, and the
# transformation to the engine's internal units (dev/ARCHITECTURE.md, section 6).

build <- function(...) svir:::svir_build_spec(...)
sl <- lme4::sleepstudy

test_that("distribution constructors validate and format", {
  expect_s3_class(normal(), "svir_dist")
  expect_equal(format(normal(0, 10)), "normal(0, 10)")
  expect_equal(format(student_t(3, 298.5077, 117.19)), "student_t(3, 298.5, 117.2)")
  expect_equal(format(half_normal(2)), "half_normal(2)")
  expect_equal(format(half_student_t(4, 2.5)), "half_student_t(4, 2.5)")
  expect_equal(format(exponential(0.1)), "exponential(0.1)")
  expect_equal(format(lkj(2)), "lkj(2)")
  expect_equal(format(flat()), "flat()")
  expect_output(print(normal(1, 2)), "normal\\(1, 2\\)")
  expect_error(normal(0, 0), class = "svir_error", regexp = "`scale` of `normal\\(\\)`")
  expect_error(normal(Inf, 1), class = "svir_error", regexp = "`location`")
  expect_error(normal("a"), class = "svir_error", regexp = "`location`")
  expect_error(student_t(-1), class = "svir_error", regexp = "`df`")
  expect_error(student_t(Inf), class = "svir_error", regexp = "`df`")
  expect_error(half_normal(-2), class = "svir_error", regexp = "`scale`")
  expect_error(half_student_t(3, NA), class = "svir_error", regexp = "`scale`")
  expect_error(exponential(0), class = "svir_error", regexp = "`rate`")
  expect_error(lkj(-1), class = "svir_error", regexp = "`eta`")
  expect_error(lkj(c(1, 2)), class = "svir_error", regexp = "`eta`")
})

test_that("svi_prior() validates each class", {
  p <- svi_prior()
  expect_s3_class(p, "svi_prior")
  expect_true(all(vapply(p, is.null, NA)))
  expect_output(print(svi_prior(b = normal(0, 5))), "normal\\(0, 5\\)")
  # normal/student_t with location 0 are the half versions for positive classes
  p <- svi_prior(sd = normal(0, 3), sigma = student_t(5, 0, 2), phi = exponential(1))
  expect_equal(p$sd$dist, "half_normal")
  expect_equal(p$sigma$dist, "half_student_t")
  expect_equal(p$sigma$df, 5)
  expect_error(svi_prior(sd = normal(1, 1)), class = "svir_error",
               regexp = "`sd` .*location 0")
  expect_error(svi_prior(sigma = student_t(3, -1, 1)), class = "svir_error", regexp = "`sigma`")
  expect_error(svi_prior(sd = lkj()), class = "svir_error", regexp = "`sd` does not accept")
  expect_error(svi_prior(phi = normal(2, 1)), class = "svir_error", regexp = "`phi`")
  expect_error(svi_prior(cor = normal()), class = "svir_error", regexp = "`cor` does not accept")
  expect_error(svi_prior(intercept = exponential()), class = "svir_error",
               regexp = "`intercept` does not accept")
  expect_error(svi_prior(b = half_normal()), class = "svir_error", regexp = "`b` does not accept")
  expect_error(svi_prior(sd = flat()), class = "svir_error", regexp = "`sd` does not accept")
  expect_error(svi_prior(b = 2), class = "svir_error", regexp = "`b` must be a prior")
  expect_error(svi_prior(b = list(normal())), class = "svir_error", regexp = "`b` given as a list")
  expect_error(svi_prior(b = list(x = 1)), class = "svir_error", regexp = "`b\\$x`")
  expect_error(svi_prior(sigma = list(x = half_normal())), class = "svir_error",
               regexp = "`sigma` must be")
  p <- svi_prior(b = list(Days = normal(0, 10)), sd = list(Subject = normal(0, 20)))
  expect_equal(p$sd$Subject$dist, "half_normal")
})

test_that("default priors, gaussian: scale-aware on the data scale, 2.5 internally", {
  s <- build(Reaction ~ Days + (Days | Subject), sl)
  tab <- s$info$prior
  sy <- sd(sl$Reaction)
  sx <- sd(sl$Days)
  expect_s3_class(tab, "svir_prior_summary")
  expect_equal(names(tab), c("class", "coef", "group", "prior", "source"))
  expect_equal(tab$class, c("Intercept", "b", "sd", "sd", "cor", "sigma"))
  expect_equal(tab$coef, c("", "Days", "(Intercept)", "Days", "", ""))
  expect_equal(tab$group, c("", "", "Subject", "Subject", "Subject", ""))
  expect_equal(tab$source, rep("default", 6))
  expect_equal(tab$prior[1], sprintf("student_t(3, %.4g, %.4g)", mean(sl$Reaction), 2.5 * sy))
  expect_equal(tab$prior[2], sprintf("normal(0, %.4g)", 2.5 * sy / sx))
  expect_equal(tab$prior[3], sprintf("half_student_t(3, %.4g)", 2.5 * sy))
  expect_equal(tab$prior[4], sprintf("half_student_t(3, %.4g)", 2.5 * sy / sx))
  expect_equal(tab$prior[5], "lkj(1)")
  expect_equal(tab$prior[6], sprintf("half_student_t(3, %.4g)", 2.5 * sy))
  sp <- s$spec
  expect_equal(sp$prior_type, c(2L, 1L, 2L, 2L, 4L, 2L))
  expect_equal(sp$prior_df, c(3, 1, 3, 3, 1, 3))
  expect_equal(sp$prior_loc, rep(0, 6))
  expect_equal(sp$prior_scale, c(2.5, 2.5, 2.5, 2.5 / sx, 1, 2.5))
  expect_output(print(tab), "student_t\\(3, 298.5")
})

test_that("default priors, other families: link scale", {
  set.seed(1)
  d <- data.frame(x = rnorm(60, 10, 4), g = factor(rep(1:6, 10)))
  d$y <- rnbinom(60, size = 2, mu = exp(1 + 0.1 * d$x))
  s <- build(y ~ x + (x | g), d, family = negbin())
  tab <- s$info$prior
  sx <- sd(d$x)
  expect_equal(tab$class, c("Intercept", "b", "sd", "sd", "cor", "phi"))
  expect_equal(tab$prior, c("student_t(3, 0, 2.5)", sprintf("normal(0, %.4g)", 2.5 / sx),
                            "half_student_t(3, 2.5)", sprintf("half_student_t(3, %.4g)", 2.5 / sx),
                            "lkj(1)", "exponential(0.1)"))
  sp <- s$spec
  expect_equal(sp$prior_type, c(2L, 1L, 2L, 2L, 4L, 3L))
  expect_equal(sp$prior_scale, c(2.5, 2.5, 2.5, 2.5 / sx, 1, 0.1))
  expect_equal(sp$prior_loc, rep(0, 6))
  d$b <- rbinom(60, 1, 0.5)
  s <- build(b ~ x + (1 | g), d, family = binomial())
  expect_equal(s$info$prior$prior[1], "student_t(3, 0, 2.5)")
  expect_equal(s$spec$prior_scale, c(2.5, 2.5, 2.5))
})

test_that("user priors are transformed exactly to internal units", {
  p <- svi_prior(intercept = normal(300, 50), b = student_t(4, 10, 5),
                 sd = exponential(0.05), cor = lkj(2), sigma = half_normal(30))
  s <- build(Reaction ~ Days + (Days | Subject), sl, prior = p)
  sc <- s$info$scaling
  ys <- sc$y_scale
  yc <- sc$y_center
  xs <- sc$x_scale[["Days"]]
  sp <- s$spec
  expect_equal(sp$prior_type, c(1L, 2L, 3L, 3L, 4L, 1L))
  # intercept_int = (intercept_centred - y_center) / y_scale
  expect_equal(sp$prior_loc[1], (300 - yc) / ys)
  expect_equal(sp$prior_scale[1], 50 / ys)
  # slope_int = slope * x_scale / y_scale
  expect_equal(sp$prior_df[2], 4)
  expect_equal(sp$prior_loc[2], 10 * xs / ys)
  expect_equal(sp$prior_scale[2], 5 * xs / ys)
  # sd_int = sd / y_scale, so an exponential rate is multiplied by y_scale
  expect_equal(sp$prior_scale[3:4], rep(0.05 * ys, 2))
  expect_equal(sp$prior_df[5], 2)
  expect_equal(sp$prior_loc[6], 0)
  expect_equal(sp$prior_scale[6], 30 / ys)
  expect_equal(s$info$prior$source, rep("user", 6))
  expect_equal(s$info$prior$prior,
               c("normal(300, 50)", "student_t(4, 10, 5)", "exponential(0.05)",
                 "exponential(0.05)", "lkj(2)", "half_normal(30)"))

  # density check: the internal prior is the change of variables of the raw one
  th_raw <- 7
  k <- xs / ys
  lp_raw <- dt((th_raw - 10) / 5, df = 4, log = TRUE) - log(5)
  lp_int <- dt((th_raw * k - sp$prior_loc[2]) / sp$prior_scale[2], df = 4, log = TRUE) -
    log(sp$prior_scale[2])
  expect_equal(lp_int, lp_raw - log(k))
})

test_that("per-coefficient and per-group priors; flat", {
  set.seed(2)
  d <- data.frame(y = rnorm(60), x = rnorm(60), z = rnorm(60, sd = 3),
                  g = factor(rep(1:6, 10)), h = factor(rep(1:4, 15)))
  p <- svi_prior(b = list(z = normal(0, 1)), sd = list(h = half_normal(2)),
                 intercept = flat())
  s <- build(y ~ x + z + (1 | g) + (1 | h), d, prior = p)
  tab <- s$info$prior
  expect_equal(tab$source, c("user", "default", "user", "default", "user", "default"))
  expect_equal(tab$coef[1:3], c("", "x", "z"))
  expect_equal(tab$group[4:5], c("g", "h"))
  expect_equal(s$spec$prior_type[1], 0L)
  expect_equal(s$spec$prior_scale[3], 1 * sd(d$z) / sd(d$y))
  expect_equal(s$spec$prior_scale[5], 2 / sd(d$y))
  expect_equal(s$spec$prior_scale[2], 2.5)
})

test_that("priors that match nothing warn", {
  expect_warning(build(Reaction ~ Days + (1 | Subject), sl,
                       prior = svi_prior(phi = exponential(1))),
                 class = "svir_warning", regexp = "phi")
  expect_warning(build(Reaction ~ Days + (1 | Subject), sl, prior = svi_prior(cor = lkj(2))),
                 class = "svir_warning", regexp = "cor")
  expect_warning(build(Reaction ~ 0 + Days + (1 | Subject), sl,
                       prior = svi_prior(intercept = normal())),
                 class = "svir_warning", regexp = "intercept")
  expect_silent(build(Reaction ~ Days + (1 | Subject), sl, prior = svi_prior(sigma = exponential(1))))
})

test_that("one cor row per correlated term, mapped onto every cpc entry", {
  set.seed(3)
  d <- data.frame(y = rnorm(90), x1 = rnorm(90), x2 = rnorm(90),
                  g = factor(rep(1:9, 10)))
  s <- build(y ~ x1 + x2 + (x1 + x2 | g), d, prior = svi_prior(cor = lkj(3)))
  lay <- s$info$layout
  expect_equal(lay$draws_name[lay$class == "cor"],
               c("cor_g__(Intercept)__x1", "cor_g__(Intercept)__x2", "cor_g__x1__x2"))
  expect_equal(lay$cor_i[lay$class == "cor"], c(2L, 3L, 3L))
  expect_equal(lay$cor_j[lay$class == "cor"], c(1L, 1L, 2L))
  expect_equal(sum(s$info$prior$class == "cor"), 1L)
  expect_equal(s$spec$prior_type[lay$class == "cor"], rep(4L, 3))
  expect_equal(s$spec$prior_df[lay$class == "cor"], rep(3, 3))
})

test_that("svir_prior_arrays accepts an svi_prior and agrees with the table", {
  s <- build(Reaction ~ Days + (Days | Subject), sl)
  a1 <- svir:::svir_prior_arrays(NULL, s$info$layout, s$info$scaling)
  a2 <- svir:::svir_prior_arrays(s$info$prior, s$info$layout, s$info$scaling)
  expect_equal(a1, a2)
  expect_equal(a1$prior_scale, s$spec$prior_scale)
})

test_that("prior_summary() returns the stored table", {
  s <- build(Reaction ~ Days + (Days | Subject), sl)
  fit <- structure(list(prior = s$info$prior), class = "svi_fit")
  ps <- prior_summary(fit)
  expect_s3_class(ps, "svir_prior_summary")
  expect_equal(ps$class, c("Intercept", "b", "sd", "sd", "cor", "sigma"))
  expect_output(print(ps), "half_student_t")
})
