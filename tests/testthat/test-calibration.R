# The default fit (no method, no guide) against long NUTS runs with the
# same priors (inst/extdata/glmm-nuts.rds, from bench/nuts/build_refs.R): for
# every fixed effect, sd, correlation, sigma and phi, the posterior mean
# within 0.3 NUTS sds of NUTS's and the posterior sd within 0.75 to 1.33
# times NUTS's. Mean-field SVI misses this on every one of these models
# (bench/results/calibration-*.md), so the test can fail.

refs <- readRDS(system.file("extdata", "glmm-nuts.rds", package = "svir"))
models <- calibration_models()
required <- c("sleepstudy", "cbpp", "salamanders", "penicillin", "pastes", "grouseticks")

test_that("the NUTS references cover the required models", {
  expect_true(all(required %in% names(refs)))
  for (nm in required) {
    expect_true(all(refs[[nm]]$diagnostics$rhat_max < 1.01))
    expect_equal(refs[[nm]]$diagnostics$divergences, 0)
  }
})

for (nm in required) {
  test_that(paste("the default fit matches NUTS on", nm), {
    mdl <- models[[nm]]
    fit <- suppressWarnings(svi_fit(mdl$formula, mdl$data, family = mdl$family, seed = 1))
    expect_identical(fit$method, "laplace")
    ref <- refs[[nm]]$summary
    dr <- as.matrix(fit)
    expect_setequal(ref$param, colnames(dr))
    d <- (colMeans(dr[, ref$param, drop = FALSE]) - ref$mean) / ref$sd
    r <- apply(dr[, ref$param, drop = FALSE], 2, sd) / ref$sd
    expect_lt(max(abs(d)), 0.3, label = paste(nm, "largest |mean - NUTS mean| / NUTS sd"))
    expect_gt(min(r), 0.75, label = paste(nm, "smallest sd / NUTS sd"))
    expect_lt(max(r), 1.33, label = paste(nm, "largest sd / NUTS sd"))
    if (nm == "grouseticks") {
      # its effect per observation is integrated out by quadrature, which
      # makes the joint weights usable (without it: k-hat above 1, the
      # Laplace marginal's weights, the intercept 0.72 NUTS sds off)
      expect_identical(fit$laplace$weighting, "joint")
      expect_match(paste(capture.output(summary(fit)), collapse = " "), "integrated out by adaptive")
    }
  })
}

# QEM on more than one grouping factor (issue 16, point 3; glmm_nest.c):
# Pastes' nested factors run as a tree of plates, Penicillin's crossed
# sample factor is weighed with the globals. Against the same NUTS
# references: means within 0.35 NUTS sds, sds within 0.7 to 1.33 times
# NUTS's (bench/qem_nested.R: seeds 1 to 3 gave at most 0.35 and at least
# 0.72). Drawing the crossed effects on z = b / sd, as the tree's groups
# are, put Penicillin's sd ratios at 0.07 and 0.14 (by hand, on the first,
# uncommitted version; dev/QEM.md).
for (nm in c("pastes", "penicillin")) {
  test_that(paste("QEM matches NUTS on", nm), {
    mdl <- models[[nm]]
    fit <- suppressWarnings(svi_fit(mdl$formula, mdl$data, family = mdl$family,
                                    method = "qem", seed = 1))
    expect_identical(fit$method, "qem")
    expect_false(is.null(fit$qem_plan))
    ref <- refs[[nm]]$summary
    dr <- as.matrix(fit)[, ref$param, drop = FALSE]
    d <- (colMeans(dr) - ref$mean) / ref$sd
    r <- apply(dr, 2, sd) / ref$sd
    expect_lt(max(abs(d)), 0.35, label = paste(nm, "QEM's largest |mean - NUTS mean| / NUTS sd"))
    expect_gt(min(r), 0.7, label = paste(nm, "QEM's smallest sd / NUTS sd"))
    expect_lt(max(r), 1.33, label = paste(nm, "QEM's largest sd / NUTS sd"))
    out <- paste(capture.output(summary(fit)), collapse = "\n")
    expect_match(out, if (nm == "pastes") "QEM's tree: batch > cask:batch" else
      "crossed with it, weighed with the globals: sample", fixed = TRUE)
  })
}
