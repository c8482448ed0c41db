"""`fit_resumable`: `model.fit` that continues from a `StepBackup`, mid-epoch
included.
"""


def fit_resumable(model, x, *, epochs, steps_per_epoch, backup, callbacks=(), **kw):
    """`model.fit` that continues from `backup` (a `StepBackup`), mid-epoch
    included, and removes the backup when the run completes.

    Keras starts every epoch at its first step, so an epoch interrupted after
    `b` steps is finished by a first `fit` of `steps_per_epoch - b` steps;
    the remaining epochs follow in a second `fit`. That first epoch's logged
    training metrics average its remaining steps only. `backup` is added to
    the end of `callbacks` if missing. Other arguments go to `fit`.

    Returns:
        The `History` of the last `fit`.
    """
    callbacks = list(callbacks)
    if backup not in callbacks:
        callbacks.append(backup)
    epoch, batch = backup.restore(model)
    history = None
    if batch:
        backup.batch_offset = batch
        history = model.fit(
            x,
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=steps_per_epoch - batch,
            callbacks=callbacks,
            **kw,
        )
        epoch += 1
    if epoch < epochs:
        history = model.fit(
            x,
            initial_epoch=epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            **kw,
        )
    backup.remove()
    return history
