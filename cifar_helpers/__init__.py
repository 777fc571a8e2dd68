"""cifar-stress: train, break and explain convolutional networks on CIFAR-10.

The folders are the layers, bottom first; a module imports only from its own folder or those below:

* ``rundir``: the run directory (stages defined once, configuration, atomic artifacts, manifests,
  lineage, the lock, safe loading, seeding and the environment record);
* ``core``: data, the ResNet-18, augmentation, training and predictions;
* ``analysis``: failures, human labels, Grad-CAM, faithfulness, stress tests, calibration, the sanity
  check, the positive control, seeds;
* ``views``: figures, tables, the failure browser, the HTML report;
* ``workflow``: opening a stage, running the notebooks, progress, seed replicates.

Import what you need from each, e.g. ``from cifar_helpers.core.models import resnet18``.
"""

__version__ = "0.1.0"
