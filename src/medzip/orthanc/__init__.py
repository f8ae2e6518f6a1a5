"""Orthanc integration: a storage area that keeps every DICOM instance medzip-compressed.

``medzip orthanc config`` writes the Orthanc configuration, :mod:`.plugin` is the script Orthanc's
Python plugin runs, :mod:`.storage` the envelope and folder logic, :mod:`.migrate` converts an
existing Orthanc storage folder. Nothing in medzip's core imports this package. See docs/ORTHANC.md.
"""
