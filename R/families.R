# Families: negbin() and the lookup from R family objects to engine codes.

#' Negative binomial family (NB2)
#'
#' A family object for negative binomial responses in the NB2
#' parameterisation used by glmmTMB's `nbinom2()` and by `MASS::glm.nb()`:
#' \deqn{\mathrm{E}(y) = \mu, \qquad \mathrm{Var}(y) = \mu + \mu^2 / \phi,}
#' where \eqn{\phi > 0} is the dispersion (also called *size* or *theta*).
#' Large \eqn{\phi} approaches the Poisson distribution; small \eqn{\phi}
#' means strong overdispersion. \eqn{\phi} is estimated with the model (its
#' prior is set by `svi_prior(phi = )`), so, unlike `MASS::negative.binomial()`,
#' the family takes no `theta` argument.
#'
#' The object has the components of a [stats::family()] object (`linkfun`,
#' `linkinv`, `mu.eta`, `valideta`, `validmu`), plus
#' * `variance(mu, phi)`: the NB2 variance `mu + mu^2 / phi`;
#' * `dev.resids(y, mu, wt, phi)`: deviance residuals given `phi`;
#' * `loglik(y, mu, phi)`: pointwise log density (`dnbinom(y, size = phi, mu = mu, log = TRUE)`);
#' * `simulate(mu, phi)`: one draw per element of `mu`
#'   (`rnbinom(length(mu), size = phi, mu = mu)`), used by `simulate()` and
#'   posterior predictive checks;
#' * `theta`: `NULL` (the dispersion is a model parameter).
#'
#' @param link Link function: only `"log"` is supported (as a string or a name).
#' @return An object of class `"family"` with `family = "negbin"`.
#' @seealso [svi_prior()] for the prior on `phi`.
#' @examples
#' f <- negbin()
#' f
#' f$variance(mu = 2, phi = 4)   # 2 + 4 / 4 = 3
#' f$linkinv(f$linkfun(5))
#' set.seed(1)
#' f$simulate(mu = c(1, 10, 100), phi = 2)
#' @export
negbin <- function(link = "log") {
  linktemp <- substitute(link)
  if (!is.character(linktemp)) linktemp <- deparse(linktemp)
  if (is.character(link) && length(link) == 1L) linktemp <- link
  if (!identical(linktemp, "log")) {
    cli::cli_abort(
      c("{.arg link} must be {.val log} for {.fun negbin}, not {.val {linktemp}}.",
        "i" = "The negative binomial family is fitted with a log link only."),
      class = "svir_error", call = NULL
    )
  }
  stats_link <- stats::make.link("log")
  variance <- function(mu, phi) mu + mu^2 / phi
  validmu <- function(mu) all(is.finite(mu)) && all(mu > 0)
  dev.resids <- function(y, mu, wt, phi) {
    # 2 * wt * (log p(y | mu = y) - log p(y | mu)) for NB2 with size phi
    r <- ifelse(y > 0, y * log(y / mu), 0) -
      (y + phi) * log((y + phi) / (mu + phi))
    2 * wt * r
  }
  loglik <- function(y, mu, phi) stats::dnbinom(y, size = phi, mu = mu, log = TRUE)
  simulate <- function(mu, phi) {
    stats::rnbinom(length(mu), size = phi, mu = mu)
  }
  structure(
    list(
      family = "negbin",
      link = "log",
      linkfun = stats_link$linkfun,
      linkinv = stats_link$linkinv,
      mu.eta = stats_link$mu.eta,
      valideta = stats_link$valideta,
      validmu = validmu,
      variance = variance,
      dev.resids = dev.resids,
      loglik = loglik,
      simulate = simulate,
      theta = NULL
    ),
    class = "family"
  )
}

# Supported family/link combinations: svir_glmm_pairs, and the engine's
# codes svir_codes$family and svir_codes$link (R/enum.R, generated from the
# C code lists).

#' Turn a family specification into a family object
#'
#' Accepts a family object (`gaussian()`, `negbin()`), a family function
#' (`gaussian`, `negbin`) or a string (`"gaussian"`, `"binomial"`,
#' `"poisson"`, `"negbin"`).
#' @param family The user's `family` argument.
#' @return A family object (class `"family"`).
#' @noRd
svir_as_family <- function(family) {
  if (is.character(family)) {
    if (length(family) != 1L || is.na(family)) {
      svir_family_abort("{.arg family} must be a single string, a family function or a family object.")
    }
    fam <- switch(tolower(family),
      gaussian = stats::gaussian(),
      binomial = stats::binomial(),
      poisson = stats::poisson(),
      negbin = ,
      nbinom2 = ,
      negative_binomial = negbin(),
      svir_family_abort("{.arg family} {.val {family}} is not supported.")
    )
    return(fam)
  }
  if (is.function(family)) {
    fam <- tryCatch(family(), error = function(e) NULL)
    if (!inherits(fam, "family")) {
      svir_family_abort("{.arg family} is a function that does not return a family object.")
    }
    return(fam)
  }
  if (inherits(family, "family") || (is.list(family) && !is.null(family$family))) {
    return(family)
  }
  svir_family_abort("{.arg family} must be a family object such as {.code gaussian()}, a family function or a string.")
}

svir_family_abort <- function(msg, ..., .envir = parent.frame()) {
  cli::cli_abort(
    c(msg,
      "i" = "Supported: {.code gaussian(link = \"identity\")}, {.code binomial(link = \"logit\" | \"probit\" | \"cloglog\")}, {.code poisson(link = \"log\")}, {.code negbin(link = \"log\")}."),
    class = "svir_error", call = NULL, .envir = .envir
  )
}

#' Engine codes for a family
#'
#' @param family A family object, a family function or a string.
#' @return `list(family = <int code>, link = <int code>, name = <family name>,
#'   link_name = <link name>, object = <family object>)`, the codes of
#'   `svir_codes` (R/enum.R).
#' @noRd
svir_family_code <- function(family) {
  fam <- svir_as_family(family)
  name <- fam$family
  link <- fam$link
  if (!is.character(name) || length(name) != 1L) {
    svir_family_abort("{.arg family} is not a valid family object.")
  }
  # glmmTMB's nbinom2() is the same NB2 model
  if (name %in% c("nbinom2")) {
    name <- "negbin"
    fam <- negbin()
  }
  if (grepl("^Negative Binomial", name)) {
    svir_family_abort(
      "{.arg family} {.val {name}} (fixed theta) is not supported; use {.code negbin()}, which estimates the dispersion."
    )
  }
  if (!name %in% names(svir_glmm_pairs)) {
    svir_family_abort("{.arg family} {.val {name}} is not supported.")
  }
  if (!is.character(link) || length(link) != 1L || !link %in% svir_glmm_pairs[[name]]) {
    svir_family_abort("{.arg family} {.val {name}} with link {.val {format(link)}} is not supported.")
  }
  list(
    family = svir_codes$family[[name]],
    link = svir_codes$link[[link]],
    name = name,
    link_name = link,
    object = fam
  )
}
