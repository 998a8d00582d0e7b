# The registry of models svi_fit() dispatches to, and the one way every
# fit runs (svir_run). A model is an entry: `build` turns the user's
# arguments into a job (the engine's spec and settings as named lists, and
# what `finish` needs), `finish` turns the engine's list into the fit
# object. The C side has the same registry (src/models/registry.c); a
# job's spec$model names the entry there. See dev/ARCHITECTURE.md.

svir_models <- list(
  glmm = list(build = function(..., model = NULL) svir_glmm_build(...),
              finish = function(...) svir_glmm_finish(...)),
  # svi_fit() refuses a ziformula for pln() before it gets here
  # (its engine is chosen by pln()'s own rules: "auto" is "svi")
  pln = list(build = function(..., method, ziformula = NULL, weights = NULL, guide_given = NULL,
                              model = NULL)
               svir_pln_build(..., method = if (identical(method, "auto")) "svi" else method),
             finish = function(...) svir_pln_finish(...)),
  mixture = list(build = function(..., ziformula = NULL, weights = NULL, model = NULL) svir_mix_build(...),
                 finish = function(...) svir_mix_finish(...)),
  bnn = list(build = function(..., ziformula = NULL, weights = NULL) svir_bnn_build(...),
             finish = function(...) svir_bnn_finish(...))
)

# The entry for a family: a model family (class "svir_model_family", e.g.
# pln()) names its model; every other family is a GLMM's, unless `model`
# (svi_fit()'s, a bnn()) gives the network.
svir_model_for <- function(family, model = NULL) {
  name <- if (!is.null(model)) "bnn" else if (inherits(family, "svir_model_family")) family$model else "glmm"
  m <- svir_models[[name]]
  if (is.null(m)) {
    cli::cli_abort("svir has no model {.val {name}}.", class = "svir_error", call = NULL)
  }
  m
}

# Runs a job: job$spec and job$ctrl (named lists) through the engine's one
# fit entry point, with a progress bar when control$progress is set, and
# the wall time. A user's interrupt ends the fit with nothing returned (the
# engine frees what it holds) and is signalled again here, so a script
# stops as it would anywhere else in R.
svir_run <- function(job, label = "Fitting") {
  if (identical(job$method, "laplace")) return(svir_laplace_run(job))
  ctrl <- job$ctrl
  bar <- NULL
  if (isTRUE(job$control$progress)) {
    bar_env <- environment()
    bar <- cli::cli_progress_bar(label, total = job$control$max_steps, .envir = bar_env)
    ctrl$progress_fun <- function(step, objective) {
      cli::cli_progress_update(set = step, id = bar, .envir = bar_env)
    }
  }
  t0 <- proc.time()[["elapsed"]]
  engine <- .Call(C_svir_fit_r, job$spec, ctrl)
  elapsed <- proc.time()[["elapsed"]] - t0
  if (!is.null(bar)) cli::cli_progress_done(id = bar, .envir = bar_env)
  if (isTRUE(engine$interrupted)) rlang::interrupt()
  engine$time <- elapsed
  engine
}

# The backend a fit of `model` by `method` runs on, and why: the engine's
# backend layer decides (src/backend/svir_backend.c); this renders its
# refusals as errors. `n` is the work per step, for a size rule; `spec`
# (or NULL) the fit's spec, for the parts of a model the CUDA code lacks.
svir_choose_backend <- function(backend = "auto", n = NA_real_, model = "glmm", method = "svi",
                                minibatch = FALSE, spec = NULL, call = NULL) {
  if (!is.character(backend) || length(backend) != 1L || is.na(backend)) {
    cli::cli_abort(
      c("{.arg backend} must be one of {.val auto}, {.val cpu}, or {.val cuda}.",
        "x" = "You supplied {.obj_type_friendly {backend}}."),
      class = "svir_error", call = call
    )
  }
  choices <- c("auto", names(svir_codes$backend))
  if (!backend %in% choices) {
    cli::cli_abort(
      c("{.arg backend} must be one of {.or {.val {choices}}}.",
        "x" = "Unknown backend {.val {backend}}."),
      class = "svir_error", call = call
    )
  }
  ch <- .Call(C_svir_backend_choose_r, model, method, isTRUE(minibatch), backend, as.double(n),
              spec)
  switch(ch$refuse,
    no_device = cli::cli_abort(
      c("{.code backend = \"cuda\"} needs a usable CUDA device.",
        "x" = "{ch$detail}",
        "i" = "See {.code svir_backends()}.",
        ">" = "Use {.code backend = \"cpu\"} or {.code backend = \"auto\"}."),
      class = "svir_error", call = call),
    cpu_only = cli::cli_abort(
      c("{ch$detail} on the CPU only.",
        i = "Use {.code backend = \"cpu\"} or {.code backend = \"auto\"}."),
      class = "svir_error", call = call),
    no_method = cli::cli_abort("{ch$detail}.", class = "svir_error", call = call),
    NULL)
  list(backend = ch$backend, reason = ch$reason)
}
