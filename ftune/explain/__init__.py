"""`ftune explain` and `ftune stress`: token attributions of a run's predictions (attribution.py, with captum),
their faithfulness (faithfulness.py), a self-contained HTML page of them (page.py), and the task metric under
seeded perturbations of an evaluation split (perturb.py, stress.py). Tasks say what is explained and how
their inputs are perturbed through facts and hooks on TaskBase (explainable, explain_targets, explain_words,
stress_input); nothing here knows a task by name."""
