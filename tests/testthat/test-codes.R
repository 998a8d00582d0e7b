# R/enum.R is generated from the C code lists (tools/enum.R): it must be what
# the compiled code has, or R would pass the engine the wrong codes.

test_that("the R code lists are the compiled code's", {
  cc <- .Call(svir:::C_svir_codes_r)
  rc <- svir:::svir_codes
  expect_setequal(names(rc), names(cc))
  for (nm in names(cc)) {
    expect_identical(rc[[nm]][order(names(rc[[nm]]))], cc[[nm]][order(names(cc[[nm]]))],
                     label = paste0("svir_codes$", nm))
  }
})

test_that("the GLMM's family x link pairs are the compiled code's", {
  pairs <- svir:::svir_glmm_pairs
  r <- unlist(lapply(names(pairs), function(f) paste0(f, "/", pairs[[f]])))
  expect_setequal(r, .Call(svir:::C_svir_glmm_pairs_r))
})

test_that("no R code carries a bare engine code", {
  # the front end's codes come from svir_codes, never from literals: a spec
  # built by R has the family and link of svir_codes
  s <- svir:::svir_build_spec(cbind(incidence, size - incidence) ~ period + (1 | herd),
                              lme4::cbpp, family = binomial("probit"))$spec
  expect_identical(s$family, svir:::svir_codes$family[["binomial"]])
  expect_identical(s$link, svir:::svir_codes$link[["probit"]])
  expect_true(all(s$prior_type %in% svir:::svir_codes$prior))
})
