#' Fit a generalised linear mixed model by stochastic variational inference
#'
#' `svi_fit()` fits a Bayesian generalised linear mixed model with lme4-style
#' random effects by stochastic variational inference (SVI): a Gaussian guide
#' over the global parameters (fixed effects, random-effect standard deviations
#' and correlations, residual scale) and per-group Gaussian blocks over the
#' random effects is fitted by maximising the evidence lower bound (ELBO) with
#' reparameterised gradients and Adam. Gradients are derived by hand for each
#' family and computed in C, in parallel over observations.
#'
#' @section Model:
#' The linear predictor is `eta = X beta + offset + sum_t Z_t b_t`. For each
#' random-effect term `(x | g)` and each level `j` of `g`,
#' `b_tj = diag(sd_t) L_t z_tj` with `z_tj ~ N(0, I)`, `sd_t` the
#' standard deviations and `L_t` the Cholesky factor of the correlation matrix
#' (LKJ prior). SVI's guide for a one-column term is on `u = b / sd^(1 -
#' lambda)`, and for a term of several columns on `u` with `b = D^-lambda
#' ((1 - lambda) A + lambda D) u` (`A = D L`, `D = diag(sd)`), `lambda`
#' chosen per term from the data (`centre` in [svi_control()]; 0 is the
#' non-centred `z`, 1 the centred `b`). `(x || g)` gives uncorrelated terms, `(1 | a/b)` nested and
#' `(1 | a) + (1 | b)` crossed factors, as in lme4.
#'
#' @section Guides:
#' `"meanfield"`: independent Gaussians over the unconstrained global
#' parameters (log standard deviations, Stan's canonical-partial-correlation
#' transform for correlations). `"fullrank"`: one multivariate Gaussian over
#' all of them. In both, the random effects of each group get their own
#' Gaussian with a full covariance over the terms of that group (a block per
#' group), independent of the globals; only groups present in a minibatch are
#' updated at a step.
#'
#' @section Laplace-guided importance sampling:
#' `method = "laplace"` computes the whole posterior rather than a
#' Gaussian approximation of it. Given the variance parameters (standard
#' deviations, correlations, `sigma`, `phi`), the fixed and random effects
#' are found at their joint conditional mode by Newton's method, as lme4
#' and glmmTMB do (the random effects of the largest grouping factor are
#' eliminated first, so a model with one factor costs little whatever its
#' number of levels), and the Gaussian at the mode gives their Laplace
#' approximation and the variance parameters' Laplace marginal. The
#' variance parameters are drawn from a multivariate t around that
#' marginal's mode, the effects from the Gaussian given each draw, and
#' every draw is weighted by its exact posterior density over the density
#' it was drawn from (Pareto-smoothed importance sampling, Vehtari et al.).
#' The weighted draws are the posterior: skewed variance components,
#' heavy tails and correlations come out as they are, and PSIS k-hat, over
#' all the parameters jointly, says whether the weights can be trusted
#' (below 0.7). When it is above 0.5 the proposal moves to the weighted
#' draws' moments and draws again (twice at most). A term with one column
#' and one observation per level (an observation-level effect, as for
#' overdispersed counts; not for the gaussian family, nor with weights)
#' is integrated out of each observation's likelihood by adaptive
#' Gauss-Hermite quadrature (15 nodes) instead of entering the Newton
#' system, and its draws come from their exact conditionals afterwards;
#' `summary()` says so. When the joint weights stay unusable (many random
#' effects whose conditionals are skewed), the variance
#' parameters are weighted by their Laplace marginal alone and the effects
#' follow the Laplace Gaussian given them, as INLA does, and `summary()`
#' says so. `svi_control(is_draws = )` sets the draws per round (4000);
#' `ndraws` of them are kept, resampled by their weights. On the CPU,
#' without zero inflation or minibatches.
#'
#' @section Choosing the method:
#' With `method = "auto"`, a model is fitted by `"laplace"` unless a
#' `guide` is given, it has zero inflation, `batch_size` or `keep_path`
#' is set, `backend = "cuda"` is asked for, the data separate (SVI and the
#' separated coefficients' grid posterior, below) or every response is at
#' one edge (all zeros, all successes), or its work is above a
#' budget of about 2e10 floating-point operations (a few seconds on two
#' cores; `options(svir.laplace_max_flops = )` changes it). A Newton step
#' costs about `n k^2` for `k` coefficients per observation, plus the dense
#' part of the system (the fixed effects and the random effects of every
#' factor but the largest) cubed; the search for the mode takes a few
#' hundred steps and a draw about five, so larger models get fewer draws
#' (not under 200) before they go to SVI: crossed factors with thousands
#' of levels, or hundreds of thousands of observations. The reason is in
#' `fit$method_reason`.
#'
#' @section Minibatches:
#' With `control = svi_control(batch_size = B)` each step uses `B`
#' observations drawn without replacement (a fresh permutation each epoch); the
#' likelihood is scaled by `n / B` and each group's prior term is charged to its
#' observations in the batch, so the ELBO estimate and its gradient stay
#' unbiased. Nothing needs to be set by hand.
#'
#' @section Zero inflation:
#' With `ziformula`, a response is a structural zero with probability
#' \eqn{\pi = \mathrm{logit}^{-1}(X_{zi} \gamma)} and otherwise follows the
#' family: \eqn{p(0) = \pi + (1 - \pi) f(0)}, \eqn{p(y) = (1 - \pi) f(y)} for
#' \eqn{y > 0}, so \eqn{E(y) = (1 - \pi) \mu} (glmmTMB's meaning). The
#' coefficients \eqn{\gamma} join the global parameters (their prior:
#' `svi_prior(zi = )`); `fixef(fit, component = "zi")` gives them,
#' `predict(type = "response")` includes the zero inflation,
#' `predict(type = "conditional")` leaves it out and `predict(type =
#' "zprob")` gives \eqn{\pi}; `simulate()` draws structural zeros. It works
#' with minibatches and `method = "qem"`, on the CPU.
#'
#' @section Separation:
#' When the data separate (a predictor or factor level that predicts a
#' binomial response perfectly, or a level with only zero counts), svir
#' warns, and the coefficients the data do not bound are set by their
#' priors (the fit starts at the penalised GLM's posterior mode). Their
#' posterior is skewed, with a long tail a Gaussian guide cannot follow, so
#' each such coefficient's posterior is computed on a grid: its
#' exact conditional density given the other parameters, averaged over the
#' guide's draws of them. `fixef()`, `vcov()`, `summary()`, `confint()` and
#' the draws use it; `fit$separation$marginal` holds the grid and density,
#' and `summary()` says so.
#'
#' @section Interrupts:
#' Ctrl-C (or Esc) stops a fit within about a second: svir frees what the
#' fit holds and signals the interrupt again, as any R function does, so
#' nothing half-made is returned and a script stops there.
#'
#' @section Reproducibility:
#' All noise comes from one counter-based generator (Philox4x32-10) keyed by
#' `seed`: the same seed gives bit-identical results for the same number of
#' threads. With `seed = NULL` the seed is drawn from R's generator, so
#' `set.seed()` makes a fit reproducible. The Poisson-lognormal model
#' ([pln()]) also multiplies matrices with R's BLAS: its results are
#' bit-identical for the same BLAS run with the same number of its own
#' threads (with OpenBLAS, `OPENBLAS_NUM_THREADS`); the GLMMs do not use
#' the BLAS in their steps.
#'
#' @param formula A two-sided model formula with lme4-style random effects,
#'   e.g. `y ~ x + (x | g)`. Binomial responses may be `cbind(successes,
#'   failures)`. `offset()` terms are allowed.
#' @param data A data frame containing the variables in `formula`.
#' @param family A family: [gaussian()], [binomial()] (logit, probit or
#'   cloglog link), [poisson()] or [negbin()]; a family function or its name
#'   also works. [pln()] fits the Poisson-lognormal model to a count matrix
#'   on the left of the formula (see there).
#' @param prior Priors from [svi_prior()], or `NULL` for the defaults
#'   documented there. See [prior_summary()] for what a fit used.
#' @param guide `"meanfield"` (default) or `"fullrank"`, the variational family
#'   over the global parameters of `method = "svi"`. Giving a guide makes
#'   `method = "auto"` choose SVI. A full-rank fit starts from a mean-field
#'   fit's optimum (see `warm_start` in [svi_control()]).
#' @param method Inference engine. `"auto"` (the default) chooses
#'   `"laplace"` where it can run and its work is small (about a second on
#'   two cores; see the section Choosing the method), else `"svi"`; the fit
#'   records the choice and why in `method` and `method_reason`, and
#'   [summary.svi_fit()] prints them. `"laplace"`: Laplace-guided
#'   importance sampling (see the section of that name). `"svi"`:
#'   stochastic variational inference with the guide `guide`. `"qem"`:
#'   massively parallel importance weighting with
#'   `K` samples of every latent per iteration (`K` in [svi_control()]) and a
#'   moment-matching update of the approximate posterior (Heap, Bowyer and
#'   Aitchison, 2025). QEM takes full batches. With one grouping factor and
#'   `backend = "cuda"` the groups' draws, importance weights and updates run
#'   on the GPU and the global parameters' on the CPU (checked against the
#'   CPU on an NVIDIA H200). With more than one factor it runs on the CPU:
#'   the longest chain of nested factors (`(1 | a/b)`, `(1 | a) + (1 | a:b)`,
#'   up to 6 deep) is weighed as a tree of plates, every group's `K` draws
#'   against every draw of its ancestors, so its tables hold `K^(d + 1)`
#'   values per group at depth `d`; a factor crossed with that chain has its
#'   groups' draws weighed together with the global parameters' (at most 50
#'   such effects; their proposal is on the effects plus the fixed effect of
#'   the same column, which keeps the weights from collapsing).
#'   [summary.svi_fit()] prints the tree. On the NUTS references of Pastes
#'   (nested) and Penicillin (crossed) the posterior means were within 0.35
#'   NUTS sds and the sds within 0.72 to 1.13 times NUTS's
#'   (`bench/qem_nested.R`). Its trace (`elbo`) is the
#'   importance-weighted bound log P-hat, and it stops by the same rule as
#'   SVI. Its approximate posterior is not coupled (q(theta) q(z)). It starts
#'   at the GLM fit that SVI starts from, with standard deviations three
#'   times the large-sample posterior ones (the GLM's standard errors for
#'   the fixed effects, `1 / sqrt(2 J)` for the log standard deviation of a
#'   factor with `J` levels, `1 / sqrt(2 n)` for the log residual sd), at
#'   most 1, and the random effects at their prior N(0, 1).
#'   For [count_mixture()] QEM updates one block of parameters at a time
#'   (see its help page).
#' @param control Settings of the optimiser and stopping rule, from
#'   [svi_control()] (a plain list of the same names is accepted).
#' @param backend `"auto"`, `"cpu"` or `"cuda"`; see [svir_backends()].
#'   `"cuda"` fits on the GPU: the data are uploaded once and every step
#'   (draws, likelihood, gradients, minibatch selection, Adam, the stopping
#'   rule) runs there, with the same random numbers and decisions as the CPU,
#'   so both are meant to give the same fit up to the order of
#'   floating-point sums (the posterior draws kept in the fit are made there
#'   too). It is an error when no usable CUDA device is found. `"auto"` takes
#'   the GPU when one is usable, the fit runs SVI or QEM (with
#'   `method = "auto"`, the CPU's Laplace sampler is preferred where it can
#'   run), the CUDA code has every part of the model, and a step reads at
#'   least 10^5 observations: there, on an NVIDIA H200, a step was 4.4 times
#'   faster than 16 CPU threads (`bench/README.md`, "GPU"). Otherwise the CPU.
#'   The fit records the reason in `backend_reason`.
#'   For [bnn()] networks `"cuda"` runs each step's batch on the GPU (the
#'   layers' products by cuBLAS, the same noise as the CPU's) and the rest
#'   of the step (the KL, log sigma, Adam) on the CPU; `"auto"` keeps
#'   networks on the CPU (no device timing measured yet).
#' @param seed `NULL` or a whole number in `0 .. 2^53`; see Reproducibility.
#' @param na.action How to handle missing values, as in [stats::lm()]; by
#'   default `getOption("na.action")`.
#' @param ziformula Zero inflation, as glmmTMB's `ziformula`: `NULL` or
#'   `~0` (none), `~1` (one probability of a structural zero), or a
#'   one-sided formula of fixed effects (`~ x`) for its logit. For the
#'   [poisson()] and [negbin()] families; see the section Zero inflation.
#' @param weights Prior weights, as in glmmTMB and [stats::glm()]: a
#'   numeric vector (or a column of `data`, unquoted) of non-negative
#'   values, one per row of `data`. Each observation's log-likelihood is
#'   multiplied by its weight, so integer weights fit as replicated rows.
#'   For a [binomial()] response given as a 0/1 vector, a logical, a factor
#'   or a proportion, the weights are the numbers of trials (the response
#'   is then the proportion of successes), as in `glm()`. On the CPU.
#' @param model `NULL` (a GLMM, or the model `family` names), or [bnn()]
#'   for a Bayesian neural network with `family` [gaussian()], [binomial()]
#'   or [poisson()].
#' @param ... Not used; a warning names any argument given here.
#'
#' @return An object of class `svi_fit`; see [summary.svi_fit()],
#'   [fixef.svi_fit()], [ranef.svi_fit()], [VarCorr.svi_fit()],
#'   [predict.svi_fit()] and [plot.svi_fit()]. Among its elements, `time` is
#'   the engine's wall time in seconds and `time_split` how it divides:
#'   drawing the globals and random effects (`draw`), the pass over the
#'   observations (`observations`), the backward pass to the variational
#'   parameters (`backward`), the optimiser's update and stopping rule
#'   (`update`), summed over the steps, and the pass over the posterior draws
#'   kept in the fit (`posterior_draws`); the rest of `time` is setting up and
#'   returning the results. On the CUDA backend the steps run as one stream of
#'   device work, and QEM has no such phases, so for both `draw`,
#'   `observations` and `backward` are `NaN` and `update` holds the whole
#'   loop.
#' @seealso [svi_control()], [svi_prior()], [negbin()].
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy,
#'                seed = 1)
#' fit
#' fixef(fit)
#' VarCorr(fit)
#' @importFrom stats gaussian
#' @export
svi_fit <- function(formula, data, family = gaussian(), prior = NULL,
                    guide = c("meanfield", "fullrank"), method = "auto",
                    control = svi_control(), backend = "auto", seed = NULL,
                    na.action = getOption("na.action"), ziformula = NULL, weights = NULL,
                    model = NULL, ...) {
  call <- match.call()
  dots <- list(...)
  if (length(dots)) {
    cli::cli_warn(c("Ignoring argument{?s} not used by {.fn svi_fit}: {.arg {names(dots)}}."))
  }
  guide_given <- !missing(guide)
  guide <- svir_match_arg(guide, c("meanfield", "fullrank"), "guide")
  methods <- c("auto", "svi", "qem", "laplace")
  if (!is.character(method) || length(method) != 1L || !method %in% methods) {
    cli::cli_abort(c("{.arg method} must be one of {.val {methods}}.",
                     x = "You supplied {.code {deparse1(method)}}."),
                   class = "svir_error", call = call)
  }
  control <- svir_as_control(control)
  seed <- svir_check_seed(seed, call)
  if (!is.null(model) && !inherits(model, "svir_bnn")) {
    cli::cli_abort(c("{.arg model} must be {.code NULL} or {.fn bnn}.",
                     x = "You supplied {.obj_type_friendly {model}}."),
                   class = "svir_error", call = call)
  }
  if (!is.null(model) && inherits(family, "svir_model_family")) {
    cli::cli_abort("{.arg model} = {.fn bnn} takes {.code gaussian()}, {.code binomial()} or {.code poisson()} as {.arg family}, not {.fn {family$model}}.",
                   class = "svir_error", call = call)
  }
  net <- model
  model <- svir_model_for(family, net)
  if (!is.null(net) && (!is.null(ziformula) || !is.null(substitute(weights)))) {
    cli::cli_abort("{.arg ziformula} and {.arg weights} are for GLMMs, not {.fn bnn}.",
                   class = "svir_error", call = call)
  }
  if (!is.null(ziformula) && inherits(family, "svir_model_family")) {
    cli::cli_abort("{.arg ziformula} is for GLMMs (families {.fn poisson} and {.fn negbin}), not {.fn {family$model}}.",
                   class = "svir_error", call = call)
  }
  wexpr <- substitute(weights)
  if (!is.null(wexpr)) {
    if (inherits(family, "svir_model_family")) {
      cli::cli_abort("{.arg weights} is for GLMMs, not {.fn {family$model}}.",
                     class = "svir_error", call = call)
    }
    weights <- eval(wexpr, if (is.list(data)) data else NULL, parent.frame())
  }
  job <- model$build(formula = formula, data = data, family = family, prior = prior,
                     guide = guide, method = method, control = control, backend = backend,
                     seed = seed, na.action = na.action, call = call, ziformula = ziformula,
                     weights = weights, guide_given = guide_given, model = net)
  model$finish(svir_run_warm(job), job)
}

# svir_run(), and for a GLMM fitted by SVI with the full-rank guide first a
# mean-field fit whose optimum starts the full-rank one (svi_control(warm_start
# = TRUE), the default). From the default start the full-rank guide drifted
# too slowly along the ridge of a data-rich term's sd and effects and stopped
# far from its optimum, below the mean-field ELBO it contains (bench/README.md,
# "Variance components from data-poor to data-rich levels").
svir_run_warm <- function(job) {
  if (!identical(job$method, "svi") || !identical(job$guide, "fullrank") ||
      !isTRUE(job$control$warm_start)) {
    return(svir_run(job))
  }
  jm <- job
  jm$ctrl$guide <- "meanfield"
  jm$ctrl$keep_lpar <- 1L
  jm$ctrl$keep_path <- 0L
  jm$ctrl$ndraws <- 1L
  if (!isTRUE(job$user_window)) {
    jm$ctrl$eval_every <- svir_default_window(length(job$spec$y), "meanfield")
  }
  em <- svir_run(jm, label = "Mean-field start")
  if (!identical(em$stop_reason, "converged") && !identical(em$stop_reason, "max_steps")) {
    return(svir_run(job))
  }
  job$spec$init_mu <- em$mu
  job$spec$init_sd <- exp(em$omega)
  job$spec$init_loc <- em$lpar
  # the locals are in the units of the lambda the mean-field fit learned
  if (!is.null(em$centre)) job$spec$centre <- em$centre
  ef <- svir_run(job)
  ef$time <- ef$time + em$time
  ef$warm_start <- list(steps = em$steps, stop_reason = em$stop_reason, time = em$time)
  ef
}

# svi_fit() for a GLMM: the spec (R/formula.R), the checks, the settings.
svir_glmm_build <- function(formula, data, family, prior, guide, method, control, backend,
                            seed, na.action, call, ziformula = NULL, weights = NULL,
                            guide_given = TRUE) {
  built <- svir_build_spec(formula, data, family = family, prior = prior,
                           na.action = na.action, ziformula = ziformula, weights = weights)
  spec <- built$spec
  info <- built$info
  n <- length(spec$y)
  svir_check_batch(control, n)
  qem_plan <- if (method == "qem") svir_check_qem(spec, control, call)
  if (!is.null(qem_plan)) spec$qem_level <- qem_plan$level
  if (method == "laplace") svir_check_laplace(spec, control, backend, call)
  if (!is.null(qem_plan) && identical(backend, "cuda")) {
    cli::cli_abort(c("{.code method = \"qem\"} with more than one grouping factor runs on the CPU only.",
                     i = "Use {.code backend = \"cpu\"} or {.code \"auto\"}, or {.code method = \"svi\"} on the device."),
                   class = "svir_error", call = call)
  }
  be <- svir_choose_backend(backend, svir_glmm_work(spec, control, method), model = "glmm",
                            method = if (method %in% c("auto", "laplace")) "svi" else method,
                            minibatch = !is.null(control$batch_size), spec = spec, call = call)
  if (!is.null(qem_plan)) {
    be <- list(backend = "cpu", reason = "QEM with more than one grouping factor runs on the CPU only")
  }
  if (control$keep_path > 0L && identical(be$backend, "cuda") && identical(backend, "auto")) {
    be <- list(backend = "cpu", reason = "keep_path runs on the CPU only, so it fits on the CPU")
  }
  if (control$keep_path > 0L && identical(be$backend, "cuda")) {
    cli::cli_abort(c("{.code keep_path} is not available with {.code backend = \"cuda\"}.",
                     i = "Use {.code backend = \"cpu\"}, or {.code keep_path = 0}."),
                   class = "svir_error", call = call)
  }
  spec$init_mu <- svir_init_mu(spec, info)
  if (method == "qem") spec$init_sd <- svir_qem_start_sd(spec, info, attr(spec$init_mu, "glm_se"))
  attr(spec$init_mu, "glm_se") <- NULL
  separation <- attr(spec$init_mu, "separation")
  attr(spec$init_mu, "separation") <- NULL
  # a response at one edge in every observation: the separation of the
  # intercept, warned about once (svir_warn_data)
  edge <- svir_warn_data(spec, info, separation)
  if (edge) separation <- NULL
  # the method: given, or chosen by the rule of svir_auto_method() (R/laplace.R)
  if (method == "auto") {
    # with backend = "auto", the Laplace sampler (CPU) is preferred where it
    # can run; the device's size rule is for the SVI fits
    ch <- svir_auto_method(spec, control, if (identical(backend, "auto")) list(backend = "cpu") else be,
                           guide_given, separation, edge)
    method <- ch$method
    method_reason <- ch$reason
    if (!is.null(ch$is_draws)) control$is_draws <- ch$is_draws
  } else {
    method_reason <- "given by the user"
  }
  if (method == "laplace") {
    be$backend <- "cpu"
    be$reason <- "the Laplace importance sampler runs on the CPU"
  }

  # SVI's partial centring per term (svir_centring() in R/start.R): the
  # engine's centred step is on the CPU, so a fit the rule would centre
  # leaves the device (svir_centre_backend)
  centre <- NULL
  if (method == "svi" && identical(be$backend, "cuda") && !identical(control$centre, "none")) {
    be <- svir_centre_backend(be, backend, svir_centring(spec, info, control$centre), info, call)
  }
  if (method == "svi" && !identical(be$backend, "cuda")) {
    centre <- svir_centring(spec, info, control$centre)
    if (any(centre != 0)) spec$centre <- centre
    if (any(centre != 0) && identical(control$centre, "learn")) {
      if (control$keep_path > 0L) {
        cli::cli_abort(c("{.code keep_path} is not available with {.code centre = \"learn\"}.",
                         i = "The kept guides would be in the units of a lambda that moved; use {.code centre = \"auto\"}."),
                       class = "svir_error", call = call)
      }
      spec$centre_learn <- 1L
    }
  }

  user_window <- !is.null(control$eval_every)
  if (!user_window) {
    control$eval_every <- if (method == "svi") svir_default_window(n, guide) else 100L
  }
  B <- if (is.null(control$batch_size)) n else control$batch_size
  if (is.null(control$num_particles)) {
    control$num_particles <- as.integer(min(8, ceiling(4000 / B)))
  }
  ctrl <- svir_engine_ctrl(control, guide, seed, backend, method)
  # QEM's proposal is q(theta) q(z): coupling made no difference (dev/QEM.md)
  if (method == "qem") ctrl$couple <- 0L
  list(spec = spec, ctrl = ctrl, info = info, call = call, control = control,
       method = method, method_reason = method_reason, guide = guide, backend = be, seed = seed,
       separation = separation, user_window = user_window, qem_plan = qem_plan, centre = centre)
}

# The engine's settings (svir_control, read by src/glue/r_fit.c) from the
# user's control (num_particles already set) and the fit's guide, seed,
# backend and method.
svir_engine_ctrl <- function(control, guide, seed, backend, method) {
  ctrl <- unclass(control)
  ctrl$guide <- guide
  ctrl$seed <- seed
  ctrl$backend <- backend
  ctrl$method <- method
  ctrl$threads <- as.integer(if (is.null(control$threads)) 0L else control$threads)
  ctrl$stl <- as.integer(control$stl)
  ctrl$progress <- NULL
  ctrl
}

# The device has no centred step (svir_centre_A() is the CPU engine's). A
# term the rule centres by more than a half has data-rich levels, where the
# non-centred guide's variance components and intercept were biased (on the
# device, a 10^7-row Poisson GLMM's intercept 30 posterior sds off;
# bench/README.md, "GPU"): with backend = "auto" the fit moves to the CPU
# and says why; with backend = "cuda" it stays, with a warning. `lam`: the
# rule's lambda per term.
svir_centre_backend <- function(be, backend, lam, info, call = NULL) {
  rich <- which(lam > 0.5)
  if (!length(rich)) return(be)
  g <- vapply(info$re[rich], `[[`, "", "grpvar")
  what <- paste(sprintf("%s (lambda %.2f)", g, lam[rich]), collapse = ", ")
  if (identical(backend, "auto")) {
    return(list(backend = "cpu", reason = paste0(
      "the device has no centred step, and the data-rich term", if (length(rich) > 1L) "s " else " ",
      what, " need", if (length(rich) > 1L) "" else "s", " one")))
  }
  cli::cli_warn(c("{.code backend = \"cuda\"} fits every random-effect term non-centred: the device has no centred step.",
                  i = "The rule would centre {what}: with data-rich levels the non-centred guide's variance components and intercept can be biased.",
                  i = "Use {.code backend = \"auto\"} or {.code \"cpu\"} for the centred fit."),
                class = "svir_warning", call = call)
  be
}

# The svi_fit object of a GLMM from the engine's list.
svir_glmm_finish <- function(engine, job) {
  svir_warn_stop(engine, job$control)
  # a learned centring: the lambda the fit ended with (its start: centre_start)
  if (!is.null(engine$centre)) {
    job$spec$centre <- engine$centre
    job$centre_start <- job$centre
    job$centre <- engine$centre
  }
  # the readers of the locals (svir_re_A) scale them by sd^-lambda
  if (!is.null(job$spec$centre)) {
    for (t in seq_along(job$info$re)) job$info$re[[t]]$centre <- job$spec$centre[t]
  }
  fit <- svir_postprocess(engine, job$info, call = job$call, control = job$control,
                          method = job$method, guide = job$guide,
                          backend = list(backend = engine$backend, reason = engine$backend_reason),
                          seed = job$seed)
  fit$separation <- job$separation
  fit$method_reason <- job$method_reason
  fit$qem_plan <- job$qem_plan
  fit$centre <- job$centre
  fit$centre_start <- job$centre_start
  if (identical(job$method, "laplace")) {
    # importance-weighted draws of the whole posterior (R/laplace.R): the
    # separated coefficients' tails are in them, no grid is needed
    fit <- svir_laplace_finish(fit, engine)
  } else {
    # a separated coefficient's posterior on a grid (R/separation.R)
    fit <- svir_separation_refit(fit, job$spec)
  }
  if (!is.null(engine$path)) {
    # what svir_path_bound() needs to evaluate the kept guides
    fit$path <- c(engine$path, list(spec = job$spec, ctrl = job$ctrl))
  }
  fit
}

svir_match_arg <- function(arg, choices, name) {
  if (identical(arg, choices)) return(choices[1])
  if (!is.character(arg) || length(arg) != 1 || !arg %in% choices) {
    cli::cli_abort(c("{.arg {name}} must be one of {.val {choices}}.",
                     x = "You supplied {.val {format(arg)}}."),
                   class = "svir_error", call = NULL)
  }
  arg
}

svir_check_seed <- function(seed, call = NULL) {
  if (is.null(seed)) {
    # two draws from R's generator, so set.seed() governs the fit
    return(as.double(sample.int(2^30, 1) - 1) * 2^22 + (sample.int(2^22, 1) - 1))
  }
  if (!is.numeric(seed) || length(seed) != 1 || !is.finite(seed) || seed < 0 ||
      seed != round(seed) || seed > 2^53) {
    cli::cli_abort(c("{.arg seed} must be NULL or a whole number between 0 and 2^53.",
                     x = "You supplied {.val {format(seed)}}."),
                   class = "svir_error", call = call)
  }
  as.double(seed)
}

# The work of a step, in the units of the engine's size rule for
# backend = "auto" (glmm_size in src/models/glmm/glmm_model.c): the
# observations of a step (the minibatch's, or all), and for QEM the K draws'
# linear predictors and the groups' K x K tables, K n + K^2 J.
svir_glmm_work <- function(spec, control, method) {
  n <- length(spec$y)
  if (identical(method, "qem")) {
    K <- as.double(control$K)
    return(K * n + K^2 * sum(vapply(spec$terms, function(tm) as.double(tm$ngroups), 1)))
  }
  if (is.null(control$batch_size)) n else min(n, control$batch_size)
}

# What QEM cannot do, refused before any work, and its plan for more than
# one grouping factor (see dev/QEM.md).
svir_check_qem <- function(spec, control, call) {
  if (!is.null(control$batch_size)) {
    cli::cli_abort(c(
      "{.code method = \"qem\"} uses every observation in each iteration.",
      x = "{.code batch_size = {control$batch_size}} was given.",
      i = "Leave {.arg batch_size} as {.code NULL}, or use {.code method = \"svi\"}."),
      class = "svir_error", call = call)
  }
  if (length(spec$terms) > 1L) return(svir_qem_plan(spec, control$K, call))
  invisible(NULL)
}

# nests[a, b]: every level of term a lies within one level of term b (a
# term on the same factor as another nests in the earlier one)
svir_nesting <- function(spec) {
  tms <- spec$terms
  nt <- length(tms)
  J <- vapply(tms, function(tm) as.double(tm$ngroups), 1)
  nests <- matrix(FALSE, nt, nt)
  for (a in seq_len(nt)) for (b in seq_len(nt)) {
    if (a == b || J[a] < J[b] || (J[a] == J[b] && a < b)) next
    ga <- tms[[a]]$group
    pairs <- unique(as.double(ga) * J[b] + tms[[b]]$group)
    nests[a, b] <- length(pairs) == length(unique(ga))
  }
  nests
}

# QEM's plan for more than one grouping factor (src/models/glmm/glmm_nest.c,
# dev/QEM.md "Nested and crossed factors"). The factors that nest in one
# another form a chain, the coarsest first, that runs as a tree of plates
# (exact: every group's K draws are weighed with every draw of its
# ancestors); among the chains the one with the most latent values is taken.
# Every other factor is crossed with that chain: its groups' K draws are
# weighed together with the globals' K draws, which is exact as an
# importance sampler but loses power as their number grows, so at most
# `max_crossed` such values are taken and a model beyond that is refused.
# Returns list(level = an integer per term: 1 .. L on the chain, 0 crossed;
# chain, crossed: the terms' indices; cells: the tables' entries).
svir_qem_plan <- function(spec, K, call = NULL, max_crossed = 50, max_cells = 2^25) {
  tms <- spec$terms
  nt <- length(tms)
  J <- vapply(tms, function(tm) as.double(tm$ngroups), 1)
  q <- vapply(tms, function(tm) ncol(tm$Z), 1L)
  nests <- svir_nesting(spec)
  best <- NULL
  for (leaf in seq_len(nt)) {
    chain <- leaf
    up <- which(nests[leaf, ])
    for (b in up[order(-J[up], -up)]) {
      if (nests[chain[1L], b]) chain <- c(b, chain)
    }
    if (is.null(best) || sum(J[chain] * q[chain]) > sum(J[best] * q[best])) best <- chain
  }
  crossed <- setdiff(seq_len(nt), best)
  level <- integer(nt)
  level[best] <- seq_along(best)
  ncross <- sum(J[crossed] * q[crossed])
  if (length(best) > 6L) {
    cli::cli_abort(c(
      "{.code method = \"qem\"} takes nested factors at most 6 deep.",
      x = "This model nests {length(best)} factors.",
      i = "{.code method = \"auto\"} or {.code method = \"svi\"} take it."),
      class = "svir_error", call = call)
  }
  if (ncross > max_crossed) {
    cli::cli_abort(c(
      "{.code method = \"qem\"} weighs the effects of factors crossed with its tree together with the globals, at most {max_crossed} of them.",
      x = "This model has {ncross} such random effect{?s} (term{?s} {crossed}).",
      i = "{.code method = \"auto\"} (the Laplace sampler where the model fits its budget) or {.code method = \"svi\"} take crossed factors with many levels."),
      class = "svir_error", call = call)
  }
  cells <- sum(J[best] * as.double(K)^(seq_along(best) + 1))
  if (cells > max_cells) {
    cli::cli_abort(c(
      "{.code method = \"qem\"}'s tables for this tree of nested factors would hold {format(cells, big.mark = \",\")} values ({round(cells * 8 / 2^20)} MB).",
      i = "Use a smaller {.code svi_control(K = )} (the tables grow as K to the power depth + 1), or {.code method = \"svi\"}."),
      class = "svir_error", call = call)
  }
  list(level = as.integer(level), chain = best, crossed = crossed, cells = cells)
}

svir_warn_stop <- function(engine, control) {
  # the one-cycle schedule runs to max_steps by design
  if (identical(control$lr_schedule, "onecycle") && identical(engine$stop_reason, "max_steps")) {
    return(invisible(NULL))
  }
  switch(engine$stop_reason,
    max_steps = cli::cli_warn(c(
      "The fit stopped at {.code max_steps = {engine$steps}} before the ELBO converged.",
      i = "Increase {.code control = svi_control(max_steps = )} or {.arg lr}; check {.code plot(fit)}.")),
    diverged = cli::cli_warn(c(
      "The fit diverged: {engine$n_rejected} step{?s} gave non-finite values and the step size was reduced each time.",
      i = "Try a smaller {.code svi_control(lr = )}, check the scale of the predictors, or tighter priors.",
      i = "The returned parameters are the last finite ones and are not reliable.")),
    invisible(NULL))
  if (engine$n_rejected > 0 && engine$stop_reason != "diverged") {
    cli::cli_inform(c(i = "{engine$n_rejected} step{?s} with non-finite values {?was/were} rejected and the step size reduced."))
  }
}

# The K-sample tree bound log P-hat (svir_tree_bound() in src/svir_qem.c) of
# each guide a fit kept with svi_control(keep_path = ): a data frame with the
# step, the seconds into the loop, and the mean and standard error of `reps`
# estimates (the mean is itself a lower bound on log p(y)). One bound and one
# set of random numbers (`seed`) for SVI's and QEM's guides alike, for
# bench/qem.R. K = 1 gives the ELBO. Models with one grouping factor.
svir_path_bound <- function(fit, K = 16L, reps = 8L, seed = 1, which = NULL) {
  path <- fit$path
  if (is.null(path)) {
    cli::cli_abort("The fit kept no path: fit with {.code svi_control(keep_path = )}.",
                   class = "svir_error", call = NULL)
  }
  idx <- if (is.null(which)) seq_along(path$step) else which
  ctrl <- path$ctrl
  ctrl$seed <- as.double(seed)
  b <- .Call(C_svir_tree_bound_r, path$spec, ctrl, path$gpar[, idx, drop = FALSE],
             path$lpar[, idx, drop = FALSE], path$anchor[, idx, drop = FALSE],
             as.integer(K), as.integer(reps))
  data.frame(step = path$step[idx], time = path$time[idx], bound = colMeans(b),
             se = if (reps > 1L) apply(b, 2, stats::sd) / sqrt(reps) else NA_real_)
}

# QEM's starting proposal sds for the globals (internal units): three times
# the large-sample posterior sd, at most 1. Fixed effects: the GLM's standard
# errors (random effects ignored, so too small for group-level covariates,
# hence the factor 3); log sd of a term with J levels: 1 / sqrt(2 J); log
# sigma: 1 / sqrt(2 n); log phi: 1 / sqrt(n / 4); correlations: 1 / sqrt(J).
# Moment matching shrinks a proposal that is too wide by about the factor
# (1 - eta_t) per iteration and widens one that is too narrow slowly, so
# QEM's iterations grow with the log of the start's excess width (dev/QEM.md).
svir_qem_start_sd <- function(spec, info, glm_se) {
  cls <- info$layout$class
  n <- length(spec$y)
  large <- rep(1, length(cls))
  b <- which(cls == "b")
  large[b] <- ifelse(is.finite(glm_se) & glm_se > 0, glm_se, 1 / 3)
  J <- vapply(spec$terms, function(tm) as.double(tm$ngroups), 1)
  for (k in which(cls %in% c("sd", "cor"))) {
    Jt <- J[info$layout$term[k]]
    large[k] <- if (cls[k] == "sd") 1 / sqrt(2 * Jt) else 1 / sqrt(Jt)
  }
  large[cls == "sigma"] <- 1 / sqrt(2 * n)
  large[cls == "phi"] <- 1 / sqrt(n / 4)
  # zero inflation (logit scale): the standard error of a proportion's logit
  # from n / 4 effective observations
  large[cls == "zi"] <- 2 / sqrt(n / 4)
  pmin(1, 3 * large)
}
