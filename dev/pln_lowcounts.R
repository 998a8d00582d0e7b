# Convergence at low counts (dev/PLN.md, "Still missing"): the vignette's simulated
# single-cell-like matrix (1,000 x 200, 71% zeros), fitted with rank 3 and
# a diagonal covariance in full batches, and with rank 3 in minibatches of
# 250 rows. Prints iterations, seconds, ELBO, and the ELBO gap of the
# full-batch fits after 5, 10, 20, 40, 80 and 120 iterations. Slow (the
# minibatch fit took about 30 minutes on a busy 2-core VM).
# Usage: R_LIBS=<lib with svir> Rscript dev/pln_lowcounts.R
suppressMessages(library(svir))
set.seed(42)
n <- 1000; p <- 200
type <- factor(sample(c("A", "B", "C"), n, replace = TRUE, prob = c(0.5, 0.3, 0.2)))
base <- rnorm(p, -1.6, 0.9)                 # log mean expression of the genes
marker <- matrix(0, 3, p)                   # 25 marker genes per type
for (k in 1:3) marker[k, sample(p, 25)] <- rnorm(25, 1.5, 0.4)
programme <- rnorm(n)                       # a continuous programme in 20 genes
prog_genes <- ifelse(seq_len(p) %in% sample(p, 20), 0.7, 0)
libsize <- rnorm(n, 0, 0.4)                 # log library size
Z <- outer(rep(1, n), base) + marker[as.integer(type), ] +
  outer(programme, prog_genes) + matrix(rnorm(n * p, 0, 0.3), n)
Yd <- matrix(rpois(n * p, exp(libsize + Z)), n,
             dimnames = list(paste0("cell", 1:n), paste0("gene", 1:p)))
Yd <- Yd[, colSums(Yd) > 0]                 # all-zero genes cannot be fitted
Y <- Matrix::Matrix(Yd, sparse = TRUE)
cells <- data.frame(size = pln_offsets(Y, "rle"))
for (fam in list(pln(rank = 3), pln(covariance = "diagonal"))) {
f <- svi_fit(Y ~ 1 + offset(size), data = cells, family = fam)
cat(f$covariance, f$steps, f$time, f$elbo, "\n")
tr <- f$trace; print(round(tail(tr, 1) - tr[c(5, 10, 20, 40, 80, 120)], 2))
}
f <- svi_fit(Y ~ 1 + offset(size), data = cells, family = pln(rank = 3), control = svi_control(batch_size = 250))
cat("mb", f$steps, f$epochs, f$time, f$elbo, "\n")
