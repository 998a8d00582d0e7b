# QEM's stopping rule on the exact normal-normal model (dev/QEM.md, "The
# stopping rule"): 12 seeds, K = 32, the sd-1 start (as test-qem.R runs it)
# and the GLM-sized start, errors in units of the exact posterior's sds.
# Run from the repository root with svir installed: Rscript dev/qem_stop.R
suppressMessages(library(svir))
source("tests/testthat/helper-sim.R")
nn <- normal_normal_setup()
k <- nn$nj * nn$tau^2 / (nn$nj * nn$tau^2 + nn$sig^2)
b_mean <- k * (nn$ybar - nn$post_mean)
b_sd <- sqrt(k * nn$sig^2 / nn$nj + k^2 * nn$post_var)
starts <- list(sd1 = NULL,
               glm = pmin(1, 3 * c(sd(nn$spec$y) / sqrt(length(nn$spec$y)), 1 / sqrt(60), 1 / sqrt(600))))
for (st in names(starts)) for (couple in 0:1) {
  sp <- nn$spec
  sp$init_sd <- starts[[st]]
  out <- t(sapply(1:12, function(s) {
    r <- .Call(svir:::C_svir_fit_r, sp, list(guide = "meanfield", seed = s, threads = 1L,
                                             ndraws = 10L, max_steps = 3000, K = 32L,
                                             method = "qem", couple = couple))
    c(iterations = r$steps, mean_err = abs(r$mu[1] - nn$post_mean) / sqrt(nn$post_var),
      sd_err = abs(exp(r$omega[1]) / sqrt(nn$post_var) - 1),
      b_err = max(abs(nn$tau * r$m[[1]][, 1] - b_mean) / b_sd))
  }))
  cat(sprintf("start %s, coupled %d: largest errors: mean %.3f, sd %.3f, groups %.3f; iterations %s\n",
              st, couple, max(out[, 2]), max(out[, 3]), max(out[, 4]),
              paste(out[, 1], collapse = " ")))
}
