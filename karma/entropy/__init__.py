"""The entropy layer: expectations per (entity, step) learned from observations,
deviations scored in bits, and simulations with known answers."""
