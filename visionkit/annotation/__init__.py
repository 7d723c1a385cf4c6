"""Annotation: agreement between labellers and a model (the widgets live in ``visionkit.widgets``)."""
