# The GLMMs whose NUTS references are in inst/extdata/glmm-nuts.rds (built
# by bench/nuts/build_refs.R with svir's default priors), for
# test-calibration.R and bench/calibration.R (which sources this file).
calibration_models <- function() {
  gt <- lme4::grouseticks
  gt$cHEIGHT <- gt$HEIGHT - mean(gt$HEIGHT)
  list(
    sleepstudy = list(formula = Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy,
                      family = gaussian()),
    cbpp = list(formula = cbind(incidence, size - incidence) ~ period + (1 | herd),
                data = lme4::cbpp, family = binomial()),
    salamanders = list(formula = count ~ mined + (1 | site), data = glmmTMB::Salamanders,
                       family = negbin()),
    penicillin = list(formula = diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin,
                      family = gaussian()),
    pastes = list(formula = strength ~ 1 + (1 | batch/cask), data = lme4::Pastes,
                  family = gaussian()),
    grouseticks_olre = list(formula = TICKS ~ YEAR + cHEIGHT + (1 | LOCATION) + (1 | INDEX),
                            data = gt, family = poisson()),
    grouseticks = list(formula = TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
                       data = gt, family = poisson())
  )
}
