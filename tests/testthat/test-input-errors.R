# Bad input gives a clear "svir_error" that names the argument, never a
# crash. These call svir_build_spec() directly: no compiled code needed.

build <- function(...) svir:::svir_build_spec(...)
sl <- lme4::sleepstudy

test_that("formula and data are checked", {
  expect_error(build("Reaction ~ Days", sl), class = "svir_error", regexp = "formula")
  expect_error(build(~ Days + (1 | Subject), sl), class = "svir_error",
               regexp = "`formula` has no response")
  expect_error(build(Reaction ~ Days, as.matrix(sl[1:2])), class = "svir_error",
               regexp = "`data` must be a data frame")
  expect_error(build(Reaction ~ Days, list(Reaction = 1:3, Days = 1:3)),
               class = "svir_error", regexp = "`data` must be a data frame")
  expect_error(build(Reaction ~ Days, NULL), class = "svir_error", regexp = "`data`")
  expect_error(build(Reaction ~ Days, sl[0, ]), class = "svir_error",
               regexp = "`data` has no rows")
})

test_that("unknown variables are named", {
  expect_error(build(Reaction ~ Dayz + (1 | Subject), sl), class = "svir_error",
               regexp = "Variable `Dayz` in `formula` is not in `data`")
  expect_error(build(Reaction ~ Days + (1 | Subjct), sl), class = "svir_error",
               regexp = "`Subjct`")
  expect_error(build(Reactn ~ Days + (1 | Subject), sl), class = "svir_error",
               regexp = "`Reactn`")
})

test_that("missing values: na.fail errors, no rows left errors", {
  d <- sl
  d$Days[3] <- NA
  expect_error(build(Reaction ~ Days + (1 | Subject), d, na.action = na.fail),
               class = "svir_error", regexp = "Missing values in `Days`.*na.action")
  expect_error(build(Reaction ~ Days + (1 | Subject), d, na.action = "na.fail"),
               class = "svir_error", regexp = "na.action")
  expect_error(build(Reaction ~ Days + (1 | Subject), d, na.action = na.pass),
               class = "svir_error", regexp = "na.action")
  expect_error(build(Reaction ~ Days + (1 | Subject), d, na.action = 42),
               class = "svir_error", regexp = "`na.action` must be a function")
  d$Reaction <- NA_real_
  expect_error(build(Reaction ~ Days + (1 | Subject), d, na.action = na.omit),
               class = "svir_error", regexp = "No observations are left")
})

test_that("non-finite values in response, predictors and offset", {
  d <- sl
  d$Reaction[5] <- Inf
  expect_error(build(Reaction ~ Days + (1 | Subject), d), class = "svir_error",
               regexp = "response `Reaction` has non-finite")
  d <- sl
  d$Days[5] <- -Inf
  expect_error(build(Reaction ~ Days + (1 | Subject), d), class = "svir_error",
               regexp = "`Days` has non-finite")
  expect_error(build(Reaction ~ Days + (1 | Subject), d), class = "svir_error",
               regexp = "data")
  expect_error(build(Reaction ~ 1 + offset(log(Days)) + (1 | Subject), sl),
               class = "svir_error", regexp = "offset `offset\\(log\\(Days\\)\\)`")
  d <- sl
  d$w <- d$Days
  d$w[7] <- Inf
  expect_error(build(Reaction ~ Days + (w | Subject), d), class = "svir_error",
               regexp = "`w` has non-finite")
})

test_that("counts must be non-negative whole numbers", {
  d <- sl
  expect_error(build(Reaction ~ Days + (1 | Subject), d, family = poisson()),
               class = "svir_error", regexp = "non-integer")
  d$y <- round(d$Reaction) - 300
  expect_error(build(y ~ Days + (1 | Subject), d, family = negbin()),
               class = "svir_error", regexp = "`y` has negative values")
  d$s <- rep(c(1, 2.5), 90)
  d$f <- 3
  expect_error(build(cbind(s, f) ~ Days + (1 | Subject), d, family = binomial()),
               class = "svir_error", regexp = "non-integer")
  d$s <- rep(c(1, -1), 90)
  expect_error(build(cbind(s, f) ~ Days + (1 | Subject), d, family = binomial()),
               class = "svir_error", regexp = "negative")
  d$f <- factor(rep(1:3, 60))
  expect_error(build(as.numeric(f) ~ Days + (1 | Subject), d, family = poisson(),
                     prior = NULL), NA)
})

test_that("binary responses outside 0/1 are refused", {
  d <- sl
  d$y <- rep(0:2, 60)
  expect_error(build(y ~ Days + (1 | Subject), d, family = binomial()),
               class = "svir_error", regexp = "`y` must be 0 or 1.*cbind")
  d$f <- factor(rep(c("a", "b", "c"), 60))
  expect_error(build(f ~ Days + (1 | Subject), d, family = binomial()),
               class = "svir_error", regexp = "factor with 3 levels")
  d$ch <- rep(c("a", "b"), 90)
  expect_error(build(ch ~ Days + (1 | Subject), d, family = binomial()),
               class = "svir_error", regexp = "`ch`")
  d$ch <- factor(d$ch)
  expect_error(build(ch ~ Days + (1 | Subject), d, family = gaussian()),
               class = "svir_error", regexp = "response `ch` must be a numeric vector")
  expect_error(build(cbind(Days, Days, Days) ~ 1 + (1 | Subject), sl, family = binomial()),
               class = "svir_error", regexp = "two columns")
})

test_that("gaussian response must vary", {
  d <- sl
  d$y <- 5
  expect_error(build(y ~ Days + (1 | Subject), d), class = "svir_error",
               regexp = "no variation")
  expect_error(build(Reaction ~ 1, sl[1, ]), class = "svir_error",
               regexp = "at least 2 observations")
})

test_that("grouping factors with one level are named", {
  d <- sl
  d$one <- "lab1"
  expect_error(build(Reaction ~ Days + (1 | one), d), class = "svir_error",
               regexp = "Grouping factor `one`.*only one level")
  # one level left after NA removal
  d <- sl
  d$site <- factor(ifelse(d$Subject == "308", "A", "B"))
  d$Reaction[d$site == "B"] <- NA
  expect_error(build(Reaction ~ Days + (1 | site), d), class = "svir_error",
               regexp = "`site`")
})

test_that("rank-deficient and constant fixed-effect columns are refused", {
  d <- sl
  d$D2 <- 2 * d$Days
  expect_error(build(Reaction ~ Days + D2 + (1 | Subject), d), class = "svir_error",
               regexp = "rank deficient: `D2`")
  d$k <- 3
  expect_error(build(Reaction ~ Days + k + (1 | Subject), d), class = "svir_error",
               regexp = "column `k` is constant")
  d$z <- 0
  expect_error(build(Reaction ~ 0 + Days + z + (1 | Subject), d), class = "svir_error",
               regexp = "`z` is zero")
  d$f <- factor(rep(c("a", "b"), 90))
  d$f2 <- d$f
  expect_error(build(Reaction ~ f + f2 + (1 | Subject), d), class = "svir_error",
               regexp = "rank deficient: `f2b`")
})

test_that("family is checked", {
  msg <- "Supported:"
  expect_error(build(Reaction ~ Days, sl, family = Gamma()), class = "svir_error",
               regexp = "`family` \"Gamma\" is not supported")
  expect_error(build(Reaction ~ Days, sl, family = Gamma()), class = "svir_error", regexp = msg)
  expect_error(build(Reaction ~ Days, sl, family = quasipoisson), class = "svir_error",
               regexp = "`family`")
  expect_error(build(Reaction ~ Days, sl, family = quasibinomial()), class = "svir_error",
               regexp = "`family`")
  expect_error(build(Reaction ~ Days, sl, family = poisson(link = "identity")),
               class = "svir_error", regexp = "`family` \"poisson\" with link \"identity\"")
  expect_error(build(Reaction ~ Days, sl, family = gaussian(link = "log")),
               class = "svir_error", regexp = "link")
  expect_error(build(Reaction ~ Days, sl, family = "weibull"), class = "svir_error",
               regexp = "`family` \"weibull\"")
  expect_error(build(Reaction ~ Days, sl, family = 3), class = "svir_error",
               regexp = "`family` must be")
  expect_error(negbin(link = "sqrt"), class = "svir_error", regexp = "`link`")
  expect_error(build(Reaction ~ Days, sl, family = MASS_like_nb <- structure(
    list(family = "Negative Binomial(2)", link = "log"), class = "family")),
    class = "svir_error", regexp = "negbin\\(\\)")
})

test_that("repeated random-effect terms are refused", {
  expect_error(build(Reaction ~ Days + (1 | Subject) + (1 | Subject), sl),
               class = "svir_error", regexp = "repeats the random-effect term")
  expect_error(build(Reaction ~ Days + (1 | Subject) + (Days | Subject), sl),
               class = "svir_error", regexp = "sd_Subject__\\(Intercept\\)")
})

test_that("bad priors and controls are refused with the argument named", {
  expect_error(build(Reaction ~ Days + (1 | Subject), sl, prior = normal(0, 1)),
               class = "svir_error", regexp = "`prior` must be made by `svi_prior\\(\\)`")
  expect_error(build(Reaction ~ Days + (1 | Subject), sl,
                     prior = svi_prior(b = list(Dayz = normal()))),
               class = "svir_error", regexp = "`b` names coefficient \"Dayz\"")
  expect_error(build(Reaction ~ Days + (1 | Subject), sl,
                     prior = svi_prior(sd = list(Subjct = half_normal()))),
               class = "svir_error", regexp = "`sd` names grouping factor \"Subjct\"")
  expect_error(build(Reaction ~ Days + (1 | Subject), sl,
                     prior = svi_prior(b = list(`(Intercept)` = normal()))),
               class = "svir_error", regexp = "intercept")
  expect_error(svi_control(batch_size = 0), class = "svir_error", regexp = "`batch_size`")
  expect_error(svi_control(batch_size = 2.5), class = "svir_error", regexp = "`batch_size`")
  expect_error(svi_control(batch_size = "all"), class = "svir_error", regexp = "`batch_size`")
  expect_error(svi_control(lr = -1), class = "svir_error", regexp = "`lr`")
  expect_error(svi_control(lr = NA), class = "svir_error", regexp = "`lr`")
  expect_error(svi_control(lr_decay = 1), class = "svir_error", regexp = "`lr_decay`")
  expect_error(svi_control(lr_schedule = "cosine"), class = "svir_error",
               regexp = "`lr_schedule`")
  expect_error(svi_control(max_steps = 0), class = "svir_error", regexp = "`max_steps`")
  expect_error(svi_control(max_steps = 1e10), class = "svir_error", regexp = "`max_steps`")
  expect_error(svi_control(eval_every = 0), class = "svir_error", regexp = "`eval_every`")
  expect_error(svi_control(tol_rel_obj = 0), class = "svir_error", regexp = "`tol_rel_obj`")
  expect_error(svi_control(patience = -1), class = "svir_error", regexp = "`patience`")
  expect_error(svi_control(num_particles = 0), class = "svir_error", regexp = "`num_particles`")
  expect_error(svi_control(threads = -2), class = "svir_error", regexp = "`threads`")
  expect_error(svi_control(ndraws = 0), class = "svir_error", regexp = "`ndraws`")
  expect_error(svi_control(init_scale = 0), class = "svir_error", regexp = "`init_scale`")
  expect_error(svi_control(progress = NA), class = "svir_error", regexp = "`progress`")
  ctrl <- svi_control(batch_size = 5000)
  expect_error(svir:::svir_check_batch(ctrl, 180), class = "svir_error",
               regexp = "batch_size.*\\(5000\\) is larger than the number of observations \\(180\\)")
  expect_error(svir:::svir_check_batch(ctrl, 180), regexp = "1\\.\\.180")
  expect_silent(svir:::svir_check_batch(svi_control(batch_size = 180), 180))
  expect_silent(svir:::svir_check_batch(svi_control(), 180))
  expect_error(svir:::svir_as_control(list(max_step = 10)), class = "svir_error",
               regexp = "`control`.*max_step")
  expect_error(svir:::svir_as_control("fast"), class = "svir_error", regexp = "`control`")
})
