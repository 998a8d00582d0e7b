# The engine spec and the info list of svir_build_spec() (dev/ARCHITECTURE.md,
# section 6). These tests need no compiled code.

build <- function(...) svir:::svir_build_spec(...)
plain <- function(x) matrix(as.double(x), nrow(x), ncol(x))

# Dense n x (J q) expansion of one term, columns ordered as lme4's Zt rows
# (level-major: level 1 coefficients, level 2 coefficients, ...).
expand_term <- function(tm) {
  n <- nrow(tm$Z)
  q <- ncol(tm$Z)
  out <- matrix(0, n, tm$ngroups * q)
  for (k in seq_len(q)) {
    out[cbind(seq_len(n), (tm$group - 1L) * q + k)] <- tm$Z[, k]
  }
  out
}

test_that("sleepstudy: layout, draws names and types follow the contract", {
  sl <- lme4::sleepstudy
  s <- build(Reaction ~ Days + (Days | Subject), sl)
  sp <- s$spec
  lay <- s$info$layout
  expect_equal(names(sp), c("y", "trials", "offset", "X", "family", "link", "terms",
                            "prior_type", "prior_df", "prior_loc", "prior_scale"))
  expect_type(sp$y, "double")
  expect_null(sp$trials)
  expect_null(sp$offset)
  expect_true(is.matrix(sp$X) && is.double(sp$X))
  expect_identical(sp$family, 0L)
  expect_identical(sp$link, 0L)
  expect_length(sp$terms, 1L)
  tm <- sp$terms[[1]]
  expect_named(tm, c("group", "ngroups", "Z", "correlated", "xmap"))
  expect_type(tm$group, "integer")
  expect_identical(range(tm$group), c(0L, 17L))
  expect_identical(tm$ngroups, 18L)
  expect_true(tm$correlated)
  expect_type(sp$prior_type, "integer")
  for (nm in c("prior_df", "prior_loc", "prior_scale")) {
    expect_type(sp[[nm]], "double")
    expect_length(sp[[nm]], nrow(lay))
  }
  expect_equal(lay$index, 1:6)
  expect_equal(lay$class, c("b", "b", "sd", "sd", "cor", "sigma"))
  expect_equal(lay$name, c("beta[1]", "beta[2]", "log_sd[1][1]", "log_sd[1][2]",
                           "cpc[1][1]", "log_sigma"))
  expect_equal(lay$draws_name, c("(Intercept)", "Days", "sd_Subject__(Intercept)",
                                 "sd_Subject__Days", "cor_Subject__(Intercept)__Days",
                                 "sigma"))
  expect_equal(lay$is_intercept, c(TRUE, FALSE, FALSE, FALSE, FALSE, FALSE))
  expect_equal(s$info$draws_names, lay$draws_name)
  expect_equal(s$info$coef_names, c("(Intercept)", "Days"))
  expect_equal(s$info$nobs, 180L)
  re <- s$info$re[[1]]
  expect_equal(re$grpvar, "Subject")
  expect_equal(re$cnms, c("(Intercept)", "Days"))
  expect_equal(re$levels, levels(sl$Subject))
  expect_equal(re$group, as.integer(sl$Subject))
  expect_true(re$correlated)
})

test_that("Z, grouping and term order equal lme4's", {
  sl <- lme4::sleepstudy
  s <- build(Reaction ~ Days + (Days | Subject), sl)
  lf <- lme4::lFormula(Reaction ~ Days + (Days | Subject), sl)
  zt <- as.matrix(lf$reTrms$Ztlist[[1]])
  expect_equal(expand_term(s$info$re[[1]]), unname(t(zt)))
  expect_equal(s$spec$terms[[1]]$Z, s$info$re[[1]]$Z)
  expect_equal(plain(s$info$X), plain(lf$X))

  # crossed factors with different numbers of levels: lme4 sorts the terms
  set.seed(1)
  d <- data.frame(y = rnorm(120), x = rnorm(120),
                  a = factor(rep(1:4, 30)), b = factor(rep(1:12, each = 10)))
  s <- build(y ~ x + (1 | a) + (x | b), d)
  lf <- lme4::lFormula(y ~ x + (1 | a) + (x | b), d)
  expect_equal(vapply(s$info$re, `[[`, "", "grpvar"), c("b", "a"))
  expect_equal(lapply(s$info$re, `[[`, "cnms"), unname(lf$reTrms$cnms))
  for (t in 1:2) {
    expect_equal(expand_term(s$info$re[[t]]), unname(t(as.matrix(lf$reTrms$Ztlist[[t]]))))
  }
  expect_equal(s$info$layout$draws_name,
               c("(Intercept)", "x", "sd_b__(Intercept)", "sd_b__x", "sd_a__(Intercept)",
                 "cor_b__(Intercept)__x", "sigma"))
  # all log_sd blocks first, then the cpc blocks
  expect_equal(s$info$layout$class, c("b", "b", "sd", "sd", "sd", "cor", "sigma"))
  expect_equal(s$info$layout$term, c(NA, NA, 1L, 1L, 2L, 1L, NA))
})

test_that("|| expands into separate uncorrelated terms", {
  sl <- lme4::sleepstudy
  s <- build(Reaction ~ Days + (Days || Subject), sl)
  expect_length(s$spec$terms, 2L)
  expect_equal(vapply(s$info$re, `[[`, "", "grpvar"), c("Subject", "Subject"))
  expect_equal(lapply(s$info$re, `[[`, "cnms"), list("(Intercept)", "Days"))
  expect_false(any(vapply(s$spec$terms, `[[`, NA, "correlated")))
  expect_false("cor" %in% s$info$layout$class)
  expect_equal(s$info$layout$draws_name,
               c("(Intercept)", "Days", "sd_Subject__(Intercept)", "sd_Subject__Days", "sigma"))
  lf <- lme4::lFormula(Reaction ~ Days + (Days || Subject), sl)
  for (t in 1:2) {
    expect_equal(expand_term(s$info$re[[t]]), unname(t(as.matrix(lf$reTrms$Ztlist[[t]]))))
  }
})

test_that("nested (1 | a/b) gives the terms b:a and a", {
  set.seed(2)
  d <- data.frame(a = factor(rep(1:5, each = 12)), b = factor(rep(1:3, 20)),
                  y = rnorm(60))
  s <- build(y ~ 1 + (1 | a/b), d)
  expect_length(s$spec$terms, 2L)
  expect_equal(vapply(s$info$re, `[[`, "", "grpvar"), c("b:a", "a"))
  expect_equal(vapply(s$spec$terms, `[[`, 0L, "ngroups"), c(15L, 5L))
  expect_equal(s$info$layout$draws_name,
               c("(Intercept)", "sd_b:a__(Intercept)", "sd_a__(Intercept)", "sigma"))
  ba <- interaction(d$b, d$a, sep = ":", drop = TRUE)
  expect_equal(s$info$re[[1]]$group,
               as.integer(factor(paste(d$b, d$a, sep = ":"), levels = s$info$re[[1]]$levels)))
  expect_equal(sort(s$info$re[[1]]$levels), sort(levels(ba)))
})

test_that("internal scaling: X centred and scaled, gaussian y standardised", {
  sl <- lme4::sleepstudy
  s <- build(Reaction ~ Days + (1 | Subject), sl)
  sc <- s$info$scaling
  expect_equal(sc$y_center, mean(sl$Reaction))
  expect_equal(sc$y_scale, sd(sl$Reaction))
  expect_equal(unname(sc$x_center), c(0, mean(sl$Days)))
  expect_equal(unname(sc$x_scale), c(1, sd(sl$Days)))
  expect_true(sc$has_intercept)
  expect_equal(sc$family, "gaussian")
  expect_equal(s$spec$y, (sl$Reaction - mean(sl$Reaction)) / sd(sl$Reaction))
  expect_equal(s$spec$X[, 1], rep(1, 180))
  expect_equal(s$spec$X[, 2], (sl$Days - mean(sl$Days)) / sd(sl$Days))
  # raw pieces are kept
  expect_equal(s$info$y, sl$Reaction)
  expect_equal(unname(s$info$X[, 2]), sl$Days)
  # Z stays raw
  expect_equal(s$spec$terms[[1]]$Z[, 1], rep(1, 180))

  # the linear predictor maps exactly: eta_int = (eta_raw - y_center) / y_scale
  beta <- c(250, 10)
  xc <- sc$x_center; xs <- sc$x_scale
  beta_int <- c((beta[1] + sum(xc[-1] * beta[-1]) - sc$y_center) / sc$y_scale,
                beta[-1] * xs[-1] / sc$y_scale)
  expect_equal(drop(s$spec$X %*% beta_int),
               unname((drop(s$info$X %*% beta) - sc$y_center) / sc$y_scale))
})

test_that("non-gaussian families keep y and offsets raw", {
  set.seed(3)
  d <- data.frame(x = rnorm(50), g = factor(rep(1:5, 10)), e = runif(50, 1, 3))
  d$y <- rpois(50, exp(0.3 + 0.5 * d$x) * d$e)
  s <- build(y ~ x + offset(log(e)) + (1 | g), d, family = poisson())
  expect_identical(s$spec$family, 2L)
  expect_identical(s$spec$link, 2L)
  expect_equal(s$spec$y, as.double(d$y))
  expect_equal(s$spec$offset, log(d$e))
  expect_equal(s$info$offset, log(d$e))
  expect_equal(s$info$scaling$y_center, 0)
  expect_equal(s$info$scaling$y_scale, 1)
  expect_equal(s$spec$X[, 2], (d$x - mean(d$x)) / sd(d$x))
  expect_false("sigma" %in% s$info$layout$class)

  s <- build(y ~ x + (1 | g), d, family = negbin())
  expect_identical(s$spec$family, 3L)
  expect_equal(tail(s$info$layout$class, 1), "phi")
  expect_equal(tail(s$info$layout$draws_name, 1), "phi")
  expect_equal(s$info$family$family, "negbin")
  s <- build(y ~ x + (1 | g), d, family = "negbin")
  expect_identical(s$spec$family, 3L)
})

test_that("gaussian offsets are divided by y_scale and not centred", {
  set.seed(4)
  d <- data.frame(x = rnorm(40), o = rnorm(40, 5), g = factor(rep(1:4, 10)))
  d$y <- 2 + d$x + d$o + rnorm(40)
  s <- build(y ~ x + offset(o) + (1 | g), d)
  expect_equal(s$spec$offset, d$o / sd(d$y))
  expect_equal(s$info$offset, d$o)
})

test_that("factors, interactions and poly() build the same X as lm()", {
  set.seed(5)
  d <- data.frame(y = rnorm(60), x = rnorm(60), z = runif(60),
                  f = factor(rep(c("a", "b", "c"), 20)),
                  g = factor(rep(1:6, each = 10)))
  f <- y ~ f * x + poly(z, 2) + (1 | g)
  s <- build(f, d)
  X_lm <- model.matrix(lm(y ~ f * x + poly(z, 2), d))
  expect_equal(colnames(s$info$X), colnames(X_lm))
  expect_equal(plain(s$info$X), plain(X_lm))
  expect_equal(attr(s$info$X, "assign"), attr(X_lm, "assign"))
  expect_equal(attr(s$info$X, "contrasts"), list(f = "contr.treatment"))
  expect_equal(s$info$xlevels, list(f = c("a", "b", "c")))
  # predvars travel with the fixed terms: new data get the fitting-data poly basis
  nd <- d[1:5, ]
  mf_new <- model.frame(s$info$terms_fixed, nd, xlev = s$info$xlevels)
  X_new <- model.matrix(s$info$terms_fixed, mf_new)
  expect_equal(plain(X_new), plain(X_lm[1:5, ]))
  # every non-intercept column of the internal X is standardised
  expect_equal(unname(colMeans(s$spec$X[, -1])), rep(0, ncol(X_lm) - 1), tolerance = 1e-12)
  expect_equal(unname(apply(s$spec$X[, -1], 2, sd)), rep(1, ncol(X_lm) - 1))
})

test_that("models without an intercept are scaled but not centred", {
  set.seed(6)
  d <- data.frame(y = rnorm(30, 100), f = factor(rep(c("a", "b", "c"), 10)),
                  g = factor(rep(1:3, each = 10)))
  s <- build(y ~ 0 + f + (1 | g), d)
  sc <- s$info$scaling
  expect_false(sc$has_intercept)
  expect_equal(unname(sc$x_center), c(0, 0, 0))
  expect_equal(sc$y_center, 0)
  expect_equal(sc$y_scale, sqrt(sum(d$y^2) / 29))
  expect_equal(unname(sc$x_scale), rep(sqrt(10 / 29), 3))
  expect_false(any(s$info$layout$is_intercept))
  expect_false("Intercept" %in% s$info$prior$class)
})

test_that("random-effect-only formulas work", {
  d <- data.frame(y = c(1, 3, 2, 5, 4, 6), g = factor(c(1, 1, 2, 2, 3, 3)))
  s <- build(y ~ (1 | g), d)
  expect_equal(s$info$coef_names, "(Intercept)")
  expect_equal(s$info$layout$draws_name, c("(Intercept)", "sd_g__(Intercept)", "sigma"))
  s <- build(y ~ 0 + (1 | g), d)
  expect_equal(ncol(s$spec$X), 0L)
  expect_equal(s$info$layout$draws_name, c("sd_g__(Intercept)", "sigma"))
})

test_that("binomial responses: 0/1, logical, factor and cbind()", {
  set.seed(7)
  d <- data.frame(x = rnorm(40), g = factor(rep(1:4, 10)))
  d$y <- rbinom(40, 1, 0.4)
  d$l <- d$y == 1
  d$f <- factor(ifelse(d$y == 1, "yes", "no"), levels = c("no", "yes"))
  d$s <- rbinom(40, 5, 0.3)
  d$fl <- 5 - d$s
  for (lhs in c("y", "l", "f")) {
    s <- build(as.formula(paste(lhs, "~ x + (1 | g)")), d, family = binomial())
    expect_equal(s$spec$y, as.double(d$y))
    expect_equal(s$spec$trials, rep(1, 40))
  }
  # a factor response keeps its first level as failure even if absent
  d2 <- d[d$y == 1, ]
  s <- build(f ~ x + (1 | g), d2, family = binomial())
  expect_equal(s$spec$y, rep(1, nrow(d2)))
  s <- build(cbind(s, fl) ~ x + (1 | g), d, family = binomial(link = "probit"))
  expect_equal(s$spec$y, as.double(d$s))
  expect_equal(s$spec$trials, rep(5, 40))
  expect_equal(s$info$trials, rep(5, 40))
  expect_identical(s$spec$link, 3L)
  s <- build(y ~ x + (1 | g), d, family = binomial("cloglog"))
  expect_identical(s$spec$link, 4L)
})

test_that("na.omit drops rows, records them and drops unused levels", {
  sl <- lme4::sleepstudy
  sl$Reaction[1:10] <- NA # all of the first subject
  s <- build(Reaction ~ Days + (1 | Subject), sl, na.action = na.omit)
  expect_equal(s$info$nobs, 170L)
  expect_equal(nrow(s$info$frame), 170L)
  expect_equal(unname(as.integer(s$info$na.action)), 1:10)
  expect_s3_class(s$info$na.action, "omit")
  expect_equal(s$spec$terms[[1]]$ngroups, 17L)
  expect_false("308" %in% s$info$re[[1]]$levels)
  s <- build(Reaction ~ Days + (1 | Subject), sl, na.action = "na.exclude")
  expect_s3_class(s$info$na.action, "exclude")
  old <- options(na.action = "na.omit")
  on.exit(options(old))
  s <- build(Reaction ~ Days + (1 | Subject), sl)
  expect_equal(s$info$nobs, 170L)
})

test_that("numeric and character grouping variables become factors", {
  d <- data.frame(y = rnorm(12), g = rep(c(10, 20, 30), 4), h = rep(c("u", "v"), 6))
  s <- build(y ~ 1 + (1 | g) + (1 | h), d)
  expect_equal(s$info$re[[1]]$levels, c("10", "20", "30"))
  expect_equal(s$info$re[[1]]$group, rep(1:3, 4))
  expect_equal(s$info$re[[2]]$levels, c("u", "v"))
})

test_that("random slopes on factors and interactions build lme4's Z", {
  set.seed(8)
  d <- data.frame(y = rnorm(60), x = rnorm(60), f = factor(rep(c("a", "b"), 30)),
                  g = factor(rep(1:6, each = 10)), h = factor(rep(1:3, 20)))
  f <- y ~ x + (0 + f | g) + (x | g:h)
  s <- build(f, d)
  lf <- lme4::lFormula(f, d)
  expect_equal(vapply(s$info$re, `[[`, "", "grpvar"), names(lf$reTrms$flist)[attr(lf$reTrms$flist, "assign")])
  for (t in seq_along(s$info$re)) {
    expect_equal(expand_term(s$info$re[[t]]), unname(t(as.matrix(lf$reTrms$Ztlist[[t]]))))
  }
})

test_that("family codes", {
  fc <- svir:::svir_family_code
  expect_equal(fc(gaussian())[c("family", "link")], list(family = 0L, link = 0L))
  expect_equal(fc(gaussian)[c("family", "link")], list(family = 0L, link = 0L))
  expect_equal(fc("binomial")[c("family", "link")], list(family = 1L, link = 1L))
  expect_equal(fc(binomial("probit"))$link, 3L)
  expect_equal(fc(binomial(link = "cloglog"))$link, 4L)
  expect_equal(fc(poisson)[c("family", "link")], list(family = 2L, link = 2L))
  expect_equal(fc(negbin())[c("family", "link", "name")],
               list(family = 3L, link = 2L, name = "negbin"))
  expect_equal(fc(negbin)$family, 3L)
  expect_equal(fc("negbin")$family, 3L)
})

test_that("negbin() is a complete family object", {
  f <- negbin()
  expect_s3_class(f, "family")
  expect_equal(f$family, "negbin")
  expect_equal(f$link, "log")
  expect_null(f$theta)
  expect_equal(f$linkfun(2), log(2))
  expect_equal(f$linkinv(log(3)), 3)
  expect_equal(f$mu.eta(0.5), exp(0.5))
  expect_equal(f$variance(2, 4), 2 + 4 / 4)
  expect_true(f$validmu(c(1, 2)))
  expect_false(f$validmu(c(-1, 2)))
  expect_true(f$valideta(1))
  expect_equal(f$loglik(3, 2, 5), dnbinom(3, size = 5, mu = 2, log = TRUE))
  expect_equal(f$dev.resids(2, 2, 1, 3), 0)
  set.seed(1)
  x <- f$simulate(rep(4, 2e4), phi = 2)
  expect_equal(mean(x), 4, tolerance = 0.05)
  expect_equal(var(x), 4 + 16 / 2, tolerance = 0.1)
  expect_equal(negbin(link = log)$link, "log")
  expect_equal(negbin("log")$link, "log")
})

test_that("grouping factors, term order and names match lme4::mkReTrms()", {
  set.seed(12)
  d <- data.frame(y = rnorm(200), a = sample(letters[1:5], 200, TRUE),
                  b = sample(1:7, 200, TRUE), x = rnorm(200))
  d$a2 <- factor(d$a, levels = c("z", letters[1:5])) # an unused level
  cases <- list(
    list(y ~ service + (1 | s) + (1 | d) + (1 | dept), lme4::InstEval[1:3000, ]),
    list(Reaction ~ Days + (Days | Subject), lme4::sleepstudy),
    list(y ~ x + (1 | a/b), d),
    list(y ~ x + (x | a:b) + (1 | b), d),
    list(y ~ x + (1 | b) + (0 + x | a), d),
    list(y ~ x + (1 | a2), d)
  )
  for (cs in cases) {
    f <- cs[[1]]
    mf <- stats::model.frame(lme4::subbars(f), cs[[2]])
    ours <- svir:::svir_re_terms(f, mf)
    rt <- suppressWarnings(lme4::mkReTrms(lme4::findbars(f), mf))
    asg <- attr(rt$flist, "assign")
    expect_length(ours, length(rt$Ztlist))
    for (i in seq_along(ours)) {
      ff <- rt$flist[[asg[i]]]
      expect_identical(ours[[i]]$levels, levels(ff))
      expect_identical(ours[[i]]$group, as.integer(ff))
      expect_identical(ours[[i]]$grpvar, names(rt$flist)[asg[i]])
      expect_identical(ours[[i]]$term, names(rt$Ztlist)[i])
      expect_identical(ours[[i]]$cnms, rt$cnms[[i]])
    }
  }
})
