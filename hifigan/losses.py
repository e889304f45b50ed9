"""HiFi-GAN training losses (spec §9.5): least-squares GAN, feature matching, mel L1.

Generator total = adversarial(MPD) + adversarial(MSD) + FEATURE_MATCHING_WEIGHT * (fm(MPD) + fm(MSD))
+ MEL_WEIGHT * L1(log-mel real, log-mel generated), exactly as the official training script.
Losses are computed in float32 whatever the autocast precision of the forward pass.
"""

import torch

FEATURE_MATCHING_WEIGHT = 2.0
"""Weight of the feature-matching term (per discriminator family)."""

MEL_WEIGHT = 45.0
"""Weight of the log-mel L1 term."""


def discriminator_loss(
    scores_real: list[torch.Tensor], scores_generated: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """LSGAN discriminator loss: sum over sub-discriminators of mean((1 - D(y))^2) + mean(D(y_hat)^2).

    Returns:
        (total loss, per-discriminator real terms, per-discriminator generated terms).
    """
    total = scores_real[0].new_zeros((), dtype=torch.float32)
    real_terms, generated_terms = [], []
    for real, generated in zip(scores_real, scores_generated, strict=True):
        real_loss = torch.mean((1.0 - real.float()) ** 2)
        generated_loss = torch.mean(generated.float() ** 2)
        total = total + real_loss + generated_loss
        real_terms.append(real_loss.detach())
        generated_terms.append(generated_loss.detach())
    return total, real_terms, generated_terms


def generator_adversarial_loss(
    scores_generated: list[torch.Tensor],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """LSGAN generator loss: sum over sub-discriminators of mean((1 - D(y_hat))^2).

    Returns:
        (total loss, per-discriminator terms).
    """
    terms = [torch.mean((1.0 - generated.float()) ** 2) for generated in scores_generated]
    return torch.stack(terms).sum(), terms


def feature_matching_loss(
    features_real: list[list[torch.Tensor]], features_generated: list[list[torch.Tensor]]
) -> torch.Tensor:
    """FEATURE_MATCHING_WEIGHT * sum over discriminators and layers of mean |f_real - f_generated|.

    The real feature maps are treated as constants (they carry no gradient to the generator).
    """
    total = features_real[0][0].new_zeros((), dtype=torch.float32)
    for real_maps, generated_maps in zip(features_real, features_generated, strict=True):
        for real, generated in zip(real_maps, generated_maps, strict=True):
            total = total + torch.mean(torch.abs(real.detach().float() - generated.float()))
    return FEATURE_MATCHING_WEIGHT * total


def mel_l1(log_mel_real: torch.Tensor, log_mel_generated: torch.Tensor) -> torch.Tensor:
    """Unweighted L1 distance of two log-mel spectrograms (B, M, F); the validation metric."""
    return torch.nn.functional.l1_loss(log_mel_generated.float(), log_mel_real.float())


def mel_loss(log_mel_real: torch.Tensor, log_mel_generated: torch.Tensor) -> torch.Tensor:
    """MEL_WEIGHT * :func:`mel_l1`, the reconstruction term of the generator loss."""
    return MEL_WEIGHT * mel_l1(log_mel_real, log_mel_generated)
