"""`fit_resumable`: `model.fit` that continues from a `StepBackup`, mid-epoch
included.
"""


def fit_resumable(model, x, *, epochs, steps_per_epoch, backup, callbacks=(), **kw):
    """`model.fit` that continues from `backup` (a `StepBackup`), mid-epoch
    included.

    The backup is left in place when training completes: the caller removes
    it (`backup.remove()`) once it has saved what it keeps of the model, so
    that a kill between the last step and that save still leaves a run to
    resume. Example:

    ```python
    backup = StepBackup("runs/demo/backup", every_steps=100)
    fit_resumable(model, data, epochs=4, steps_per_epoch=390, backup=backup)
    model.save("runs/demo/model.keras")
    backup.remove()
    ```

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
    return history
