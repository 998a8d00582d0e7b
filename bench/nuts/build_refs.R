#!/usr/bin/env Rscript
# Long-run NUTS reference posteriors for six GLMMs, priors equal to svir's
# default priors, saved as the test fixture tests/testthat/fixtures/glmm-nuts.rds
# and as bench/results/glmm-nuts-<date>.md.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/nuts/build_refs.R [--lib=/work/lib] [--only=name[,name]] [--check]
#                                   [--cores=2]
# --only: run these models and replace their entries in the existing fixture
#         (the others are kept); --check: write the Stan programs, compile them and
#         check their log density against R, without sampling.
#
# For each model: an svir fit (svi_fit(formula, data, family, seed = 1,
# method = "svi")) gives the design and prior_summary(); bench/nuts/glmm_stan.R
# writes the model in Stan (bench/nuts/<name>.stan), whose log density is
# checked against one written in R from svir's objects; then rstan NUTS, 4
# chains, 2000 warmup + 5000 sampling iterations each, adapt_delta 0.95
# (0.99, then 0.999, while there are divergences), seed 1; if a reported
# parameter has rank-normalised split-Rhat >= 1.01 or bulk/tail ESS or
# classic n_eff <= 2000, the run is repeated with twice as many sampling
# iterations (at most twice). Summaries are over the pooled post-warmup draws.

ref_date <- "2026-12-04"

args <- commandArgs(trailingOnly = TRUE)
arg_of <- function(flag, default = "") {
  hit <- grep(paste0("^--", flag, "(=|$)"), args, value = TRUE)
  if (!length(hit)) return(default)
  v <- sub(paste0("^--", flag, "=?"), "", hit[length(hit)])
  if (nzchar(v)) v else "1"
}
bad <- setdiff(sub("^--([^=]*).*$", "\\1", args), c("lib", "only", "check", "cores"))
if (length(bad)) {
  cat("usage: Rscript bench/nuts/build_refs.R [--lib=DIR] [--only=name[,name]] [--check] [--cores=2]\n")
  quit(status = 2L)
}
lib <- arg_of("lib")
only <- strsplit(arg_of("only"), ",", fixed = TRUE)[[1]]
check_only <- arg_of("check", "0") == "1"
cores <- as.integer(arg_of("cores", "2"))
if (nzchar(lib)) .libPaths(c(normalizePath(lib), .libPaths()))

source(file.path(local({
  f <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(f)) dirname(sub("^--file=", "", f[1])) else "bench/nuts"
}), "setup.R"))
source(file.path(here, "glmm_stan.R"))

say <- function(...) message(sprintf(...))

grouse <- lme4::grouseticks
grouse$cHEIGHT <- grouse$HEIGHT - mean(grouse$HEIGHT)
models <- list(
  sleepstudy = list(formula = "Reaction ~ Days + (Days | Subject)", data = "lme4::sleepstudy",
                    family = "gaussian()", d = lme4::sleepstudy, f = gaussian()),
  cbpp = list(formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", data = "lme4::cbpp",
              family = "binomial()", d = lme4::cbpp, f = binomial()),
  salamanders = list(formula = "count ~ mined + (1 | site)", data = "glmmTMB::Salamanders",
                     family = "negbin()", d = glmmTMB::Salamanders, f = negbin()),
  penicillin = list(formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", data = "lme4::Penicillin",
                    family = "gaussian()", d = lme4::Penicillin, f = gaussian()),
  pastes = list(formula = "strength ~ 1 + (1 | batch/cask)", data = "lme4::Pastes",
                family = "gaussian()", d = lme4::Pastes, f = gaussian()),
  grouseticks = list(formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
                     data = "lme4::grouseticks, with cHEIGHT = HEIGHT - mean(HEIGHT)",
                     family = "poisson()", d = grouse, f = poisson())
)
if (length(only)) {
  bad <- setdiff(only, names(models))
  if (length(bad)) stop("unknown model(s): ", paste(bad, collapse = ", "), "; known: ", paste(names(models), collapse = ", "))
  models <- models[only]
}

fixture <- file.path(root, "tests", "testthat", "fixtures", "glmm-nuts.rds")
report_md <- file.path(root, "bench", "results", sprintf("glmm-nuts-%s.md", ref_date))
refs <- if (length(only) && file.exists(fixture)) readRDS(fixture) else list()

probs <- c(q025 = 0.025, q05 = 0.05, q25 = 0.25, q50 = 0.5, q75 = 0.75, q95 = 0.95, q975 = 0.975)
seed <- 1L
chains <- 4L
warmup <- 2000L
iter0 <- 5000L

# Summary and diagnostics of one stanfit, in svir's naming.
summarise_run <- function(sf, sm) {
  a <- stan_draws_svir(sf, sm)
  mon <- rstan::monitor(a, warmup = 0, print = FALSE)
  m <- as.data.frame(mon)
  pooled <- matrix(a, ncol = dim(a)[3], dimnames = list(NULL, dimnames(a)[[3]]))
  qs <- t(apply(pooled, 2L, stats::quantile, probs = probs, names = FALSE))
  summ <- data.frame(param = colnames(pooled), mean = colMeans(pooled),
                     sd = apply(pooled, 2L, stats::sd), stringsAsFactors = FALSE)
  summ <- cbind(summ, stats::setNames(as.data.frame(qs), names(probs)))
  rownames(summ) <- NULL
  # classic n_eff and Rhat of rstan's summary, on the Stan names
  ss <- rstan::summary(sf, pars = sm$keep)$summary
  per <- data.frame(param = colnames(pooled), rhat = m[colnames(pooled), "Rhat"],
                    bulk_ess = m[colnames(pooled), "Bulk_ESS"], tail_ess = m[colnames(pooled), "Tail_ESS"],
                    n_eff = ss[unname(sm$map), "n_eff"], rhat_classic = ss[unname(sm$map), "Rhat"],
                    mcse_mean = m[colnames(pooled), "se_mean"], stringsAsFactors = FALSE)
  rownames(per) <- NULL
  sp <- rstan::get_sampler_params(sf, inc_warmup = FALSE)
  el <- rstan::get_elapsed_time(sf)
  treedepth <- unlist(lapply(sp, function(x) x[, "treedepth__"]))
  list(summary = summ, per_param = per,
       rhat_max = max(per$rhat), bulk_ess_min = min(per$bulk_ess), tail_ess_min = min(per$tail_ess),
       n_eff_min = min(per$n_eff),
       divergences = sum(unlist(lapply(sp, function(x) x[, "divergent__"]))),
       max_treedepth_hits = sum(treedepth >= 10),
       mean_treedepth = mean(treedepth),
       stepsize = vapply(sp, function(x) x[1, "stepsize__"], 0),
       bfmi_min = min(rstan::get_bfmi(sf)),
       chain_time_s = el)
}

run_model <- function(name, mdl) {
  say("== %s: %s, %s, %s", name, mdl$formula, mdl$data, mdl$family)
  t_all <- proc.time()[["elapsed"]]
  fit <- svi_fit(stats::as.formula(mdl$formula), data = mdl$d, family = mdl$f, seed = 1, method = "svi")
  sm <- stan_model_of(fit)
  cat("\nprior_summary(fit):\n")
  print(sm$prior_summary)
  cat("\nStan prior statements, row by row (row = row of prior_summary):\n")
  print(stan_prior_table(sm), right = FALSE)
  cat("\ncolnames(fit$draws) -> Stan:\n")
  print(data.frame(svir = names(sm$map), stan = unname(sm$map)), right = FALSE)
  stan_file <- file.path(here, paste0(name, ".stan"))
  writeLines(sm$code, stan_file)
  cat("\n", sm$code, sep = "")
  say("  compiling %s", stan_file)
  t0 <- proc.time()[["elapsed"]]
  smod <- suppressMessages(rstan::stan_model(file = stan_file, model_name = paste0("glmm_", name)))
  t_compile <- proc.time()[["elapsed"]] - t0
  say("  compiled in %.0f s", t_compile)
  chk <- stan_check_density(sm, fit, smod)
  say("  log density: Stan and R agree at %d points (log density %.1f to %.1f; largest difference of differences %.2e)",
      nrow(chk), min(chk$r), max(chk$r), max(chk$abs_err))
  if (check_only) return(NULL)

  attempts <- list()
  ad_ladder <- c(0.95, 0.99, 0.999)
  ad_i <- 1L
  iter_post <- iter0
  t_sampling <- 0
  repeat {
    ad <- ad_ladder[ad_i]
    say("  NUTS: %d chains, warmup %d, %d sampling iterations, adapt_delta %.3f, seed %d, cores %d",
        chains, warmup, iter_post, ad, seed, cores)
    t0 <- proc.time()[["elapsed"]]
    warn <- character()
    sf <- withCallingHandlers(
      rstan::sampling(smod, data = sm$data, chains = chains, warmup = warmup, iter = warmup + iter_post,
                      seed = seed, cores = cores, pars = sm$keep, refresh = 0,
                      control = list(adapt_delta = ad, max_treedepth = 10)),
      warning = function(w) {
        warn <<- c(warn, conditionMessage(w))
        invokeRestart("muffleWarning")
      })
    dt <- proc.time()[["elapsed"]] - t0
    t_sampling <- t_sampling + dt
    s <- summarise_run(sf, sm)
    ok_div <- s$divergences == 0L
    ok_conv <- s$rhat_max < 1.01 && s$bulk_ess_min > 2000 && s$tail_ess_min > 2000 && s$n_eff_min > 2000
    say("  %.0f s: divergences %d, max treedepth hits %d, rhat max %.4f, bulk ESS min %.0f, tail ESS min %.0f, n_eff min %.0f",
        dt, s$divergences, s$max_treedepth_hits, s$rhat_max, s$bulk_ess_min, s$tail_ess_min, s$n_eff_min)
    attempts[[length(attempts) + 1L]] <- list(adapt_delta = ad, iter = iter_post, time_s = dt,
                                              divergences = s$divergences, rhat_max = s$rhat_max,
                                              bulk_ess_min = s$bulk_ess_min, tail_ess_min = s$tail_ess_min,
                                              n_eff_min = s$n_eff_min)
    if (!ok_div && ad_i < length(ad_ladder)) {
      ad_i <- ad_i + 1L
      next
    }
    if (!ok_conv && iter_post < 4L * iter0) {
      iter_post <- 2L * iter_post
      next
    }
    break
  }
  if (!ok_div) say("  WARNING: %d divergences remain at adapt_delta %.3f", s$divergences, ad)
  if (!ok_conv) say("  WARNING: convergence requirement not met")
  warn <- unique(gsub("\\s+", " ", warn))
  if (length(warn)) say("  rstan warnings: %s", paste(warn, collapse = " | "))
  stopifnot(identical(s$summary$param, colnames(fit$draws)))
  list(
    formula = mdl$formula,
    family = mdl$family,
    data = mdl$data,
    summary = s$summary,
    diagnostics = list(
      rhat_max = s$rhat_max, bulk_ess_min = s$bulk_ess_min, tail_ess_min = s$tail_ess_min,
      n_eff_min = s$n_eff_min, divergences = s$divergences,
      max_treedepth_hits = s$max_treedepth_hits, mean_treedepth = s$mean_treedepth,
      stepsize = s$stepsize, bfmi_min = s$bfmi_min,
      requirement_met = ok_div && ok_conv,
      per_param = s$per_param,
      sampling_time_s = dt, total_sampling_time_s = t_sampling, compile_time_s = t_compile,
      total_time_s = proc.time()[["elapsed"]] - t_all,
      chain_time_s = s$chain_time_s,
      attempts = do.call(rbind, lapply(attempts, as.data.frame)),
      density_check_max_err = max(chk$abs_err),
      warnings = warn,
      stan_file = file.path("bench", "nuts", paste0(name, ".stan")),
      nobs = nrow(fit$X)),
    settings = list(chains = chains, warmup = warmup, iter = iter_post, adapt_delta = ad, seed = seed,
                    max_treedepth = 10L, thin = 1L, cores = cores,
                    note = "iter: sampling iterations per chain after warmup (rstan iter = warmup + iter)"),
    date = ref_date,
    rstan_version = as.character(utils::packageVersion("rstan")),
    svir_version = as.character(utils::packageVersion("svir")),
    priors = data.frame(class = sm$prior_summary$class, coef = sm$prior_summary$coef,
                        group = sm$prior_summary$group, prior = sm$prior_summary$prior,
                        stringsAsFactors = FALSE)
  )
}

# ---- report ----------------------------------------------------------------------

fmt <- function(x, d = 4) formatC(x, format = "g", digits = d, flag = "#")
report_lines <- function(refs) {
  out <- c(sprintf("## NUTS reference posteriors for six GLMMs (svir's default priors), %s", ref_date), "",
           "Made by `Rscript bench/nuts/build_refs.R` (Stan programs: `bench/nuts/<name>.stan`, written by",
           "`bench/nuts/glmm_stan.R` from an svir fit's design and `prior_summary()`); the same numbers are in",
           "`tests/testthat/fixtures/glmm-nuts.rds`. Summaries over the pooled post-warmup draws of all chains;",
           "Rhat: rank-normalised split-Rhat, bulk/tail ESS of `rstan::monitor()`; n_eff: `summary(stanfit)`'s.",
           "The `(Intercept)` is that of the uncentred predictors (the priors' intercept is the centred one).", "")
  for (nm in names(refs)) {
    r <- refs[[nm]]
    d <- r$diagnostics
    st <- r$settings
    s <- r$summary
    pp <- d$per_param
    out <- c(out, sprintf("### %s", nm), "",
             sprintf("`%s`, data %s, family %s (%d observations).", r$formula, r$data, r$family, d$nobs), "",
             sprintf("Settings: %d chains, warmup %d, %d sampling iterations per chain, adapt_delta %s, max_treedepth %d, seed %d; rstan %s, svir %s.",
                     st$chains, st$warmup, st$iter, format(st$adapt_delta), st$max_treedepth, st$seed,
                     r$rstan_version, r$svir_version),
             sprintf("Diagnostics: max Rhat %.4f, min bulk ESS %.0f, min tail ESS %.0f, min n_eff %.0f, divergences %d, max-treedepth hits %d, mean treedepth %.2f, min E-BFMI %.2f; requirement (Rhat < 1.01, ESS > 2000, no divergences) %s.",
                     d$rhat_max, d$bulk_ess_min, d$tail_ess_min, d$n_eff_min, d$divergences,
                     d$max_treedepth_hits, d$mean_treedepth, d$bfmi_min,
                     if (isTRUE(d$requirement_met)) "met" else "NOT MET"),
             sprintf("Time: sampling %.0f s (final run; all runs %.0f s), compiling %.0f s, in all %.0f s; runs: %s.",
                     d$sampling_time_s, d$total_sampling_time_s, d$compile_time_s, d$total_time_s,
                     paste(sprintf("adapt_delta %s x %d iterations: %d divergences, max Rhat %.4f, min bulk ESS %.0f",
                                   format(d$attempts$adapt_delta), d$attempts$iter, d$attempts$divergences,
                                   d$attempts$rhat_max, d$attempts$bulk_ess_min), collapse = "; ")),
             sprintf("Priors: %s.", paste(sprintf("%s%s%s %s", r$priors$class,
                                                 ifelse(nzchar(r$priors$coef), paste0(" ", r$priors$coef), ""),
                                                 ifelse(nzchar(r$priors$group), paste0(" | ", r$priors$group), ""),
                                                 r$priors$prior), collapse = "; ")),
             "",
             "| param | mean | sd | 2.5% | 5% | 25% | 50% | 75% | 95% | 97.5% | Rhat | bulk ESS | tail ESS | n_eff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (i in seq_len(nrow(s))) {
      out <- c(out, sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.4f | %.0f | %.0f | %.0f |",
                            s$param[i], fmt(s$mean[i]), fmt(s$sd[i]), fmt(s$q025[i]), fmt(s$q05[i]),
                            fmt(s$q25[i]), fmt(s$q50[i]), fmt(s$q75[i]), fmt(s$q95[i]), fmt(s$q975[i]),
                            pp$rhat[i], pp$bulk_ess[i], pp$tail_ess[i], pp$n_eff[i]))
    }
    if (length(d$warnings)) out <- c(out, "", paste0("rstan warnings: ", paste(d$warnings, collapse = " | ")))
    out <- c(out, "")
  }
  cpu <- tryCatch(sub(".*: ", "", grep("^model name", readLines("/proc/cpuinfo"), value = TRUE)[1]),
                  error = function(e) "unknown")
  c(out, "Notes:", "",
    sprintf("* machine: %s, %s cores (shared; chains run %d at a time); %s", cpu,
            parallel::detectCores(), cores, R.version.string),
    sprintf("* command: Rscript bench/nuts/build_refs.R %s", paste(args, collapse = " ")), "")
}

# ---- run ---------------------------------------------------------------------------

t_start <- Sys.time()
for (nm in names(models)) {
  r <- run_model(nm, models[[nm]])
  if (is.null(r)) next
  refs[[nm]] <- r
  # the fixture keeps the model order of the list above
  order_all <- c("sleepstudy", "cbpp", "salamanders", "penicillin", "pastes", "grouseticks")
  refs <- refs[intersect(order_all, names(refs))]
  dir.create(dirname(fixture), showWarnings = FALSE, recursive = TRUE)
  saveRDS(refs, fixture, version = 2)
  dir.create(dirname(report_md), showWarnings = FALSE, recursive = TRUE)
  writeLines(report_lines(refs), report_md)
  say("  written: %s (%.1f KB), %s", fixture, file.size(fixture) / 1024, report_md)
}
say("done in %.1f min", as.numeric(difftime(Sys.time(), t_start, units = "mins")))
