# QEM's start and the coupled proposal on bench/qem.R's radon-like data
# (dev/QEM.md, "The start" and "Coupling"): K = 16, 500 iterations, the
# sd-1 start and the GLM-sized start (svir_qem_start_sd()), uncoupled and
# coupled. Printed: log P-hat (QEM's own bound) at iterations 1, 50, ...,
# 500, the first iteration within 1 nat of the mean of the last 50, and the
# fixed effects. Run from the repository root with svir installed.
suppressMessages(library(svir))
src <- readLines("bench/qem.R")
eval(parse(text = src[grep("^sim_radon <- function", src):(grep("^datasets <- list", src) - 1)]))
d <- sim_radon()
b <- svir:::svir_build_spec(log_radon ~ state + floor + uranium + (1 | county), d)
spec <- b$spec
spec$init_mu <- svir:::svir_init_mu(spec, b$info)
glm_sd <- svir:::svir_qem_start_sd(spec, b$info, attr(spec$init_mu, "glm_se"))
for (start in c("sd1", "glm")) for (couple in 0:1) {
  sp <- spec
  sp$init_sd <- if (start == "glm") glm_sd else NULL
  r <- .Call(svir:::C_svir_fit_r, sp, list(guide = "meanfield", seed = 1, threads = 1L,
                                           ndraws = 10L, max_steps = 500L, K = 16L,
                                           eval_every = 1000L, method = "qem",
                                           couple = couple))
  final <- mean(utils::tail(r$elbo, 50))
  cat(sprintf("start %s, coupled %d: log P-hat at 1, 50, ..., 500: %s\n", start, couple,
              paste(round(r$elbo[c(1, seq(50, 500, 50))], 1), collapse = " ")))
  cat(sprintf("  first within 1 nat of the last 50's mean: %d; fixed effects: %s\n",
              which(r$elbo >= final - 1)[1], paste(round(r$mu[1:6], 3), collapse = " ")))
}
