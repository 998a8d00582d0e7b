// Poisson-lognormal model for a count table, with svir's priors under
// pln(globals = "bayes"): B flat, Sigma ~ inverse-Wishart(nu0, s0 I).
// Sigma^-1 = Omega ~ Wishart(nu0, I / s0) by Bartlett's decomposition,
// Omega = LA LA' with LA = A / sqrt(s0), A lower triangular, A_kk =
// sqrt(c_k), c_k ~ chi-square(nu0 - k + 1), A_kl ~ N(0, 1) below the
// diagonal. The latent rows Z_i ~ N(X_i B, Sigma) are centred (sampled as
// they are): log N(Z_i) = log |LA| - |(Z_i - X_i B)' LA|^2 / 2 + const.
// Centred sampled 8 times faster per iteration than the non-centred
// Z_i = X_i B + LA^-T z_i here (treedepth 9 against 10; one run by hand
// of 2 chains x 600 iterations each, 2026-12-04).
// Written for bench/nuts/build_pln_ref.R (rstan 2.21 syntax).
data {
  int<lower=1> n;
  int<lower=1> p;
  int<lower=1> d;
  int<lower=0> Y[n, p];
  matrix[n, d] X;
  vector[n] off;
  real<lower=p - 1> nu0;
  real<lower=0> s0;
}
parameters {
  matrix[d, p] B;
  vector<lower=0>[p] c;
  vector[(p * (p - 1)) / 2] a;
  matrix[n, p] Z;
}
transformed parameters {
  matrix[p, p] LA = rep_matrix(0, p, p);
  {
    int k = 1;
    for (j in 1:p) {
      LA[j, j] = sqrt(c[j]);
      for (i in (j + 1):p) {
        LA[i, j] = a[k];
        k += 1;
      }
    }
    LA = LA / sqrt(s0);
  }
}
model {
  matrix[n, p] E = (Z - X * B) * LA;
  for (j in 1:p) c[j] ~ chi_square(nu0 - j + 1);
  a ~ std_normal();
  target += -0.5 * dot_self(to_vector(E)) + n * sum(log(diagonal(LA)));
  for (j in 1:p) Y[, j] ~ poisson_log(off + col(Z, j));
}
generated quantities {
  matrix[p, p] Sigma;
  {
    matrix[p, p] Li = mdivide_left_tri_low(LA, diag_matrix(rep_vector(1, p)));
    Sigma = crossprod(Li);
  }
}
