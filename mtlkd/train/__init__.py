"""Training: one trainer loop, methods as small objects composed into it, task weightings, distillation losses."""
